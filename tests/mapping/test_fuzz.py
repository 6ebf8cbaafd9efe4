"""Fuzzing the expression language: whatever the text and the user, only our errors come out.

Hypothesis builds at least 10,000 expressions (calls of every function with arguments of
every kind, nested, comparisons, broken text and deep nests) and hostile users (huge
numbers, lone surrogates, backtracking bait, long runs of spaces, nested lists and
objects). Compiling may only raise :class:`ExpressionSyntaxError` or another
:class:`MappingError`; evaluating may only raise :class:`UserDataError`, and both within a
time bound. The evaluator closures are called directly: ``map_user``'s catch-all (which
turns any exception into a ``UserDataError``) would hide a bug here.

Examples are derandomized (the same every run, so the suite is not flaky); set
``BULKPROV_FUZZ_RANDOM=1`` to explore new ones.
"""

from __future__ import annotations

import os
import time
from typing import Any, get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkprov.config import ScopingClause, ScopingFilter, ScopingOperator
from bulkprov.errors import MappingError, UserDataError
from bulkprov.mapping import FUNCTIONS, MappingContext, compile_expression
from bulkprov.mapping.parser import MAX_NESTING
from bulkprov.scope import compile_scope

#: expressions per Hypothesis example, and examples: 10,000 expressions in all
BATCH = 10
EXAMPLES = 1_000
#: the regex time limit given to every expression (the default is 0.1 s)
REGEX_TIMEOUT = 0.02
#: the longest one compile or one evaluation may take, slack for a loaded machine included
BOUND = 2.0

ATTRIBUTES = [
    "a",
    "b",
    "n",
    "items",
    "obj",
    "missing",
    "IsSoftDeleted",
    "appRoleAssignments",
    "objectId",
    "extensionAttribute1",
    "telephoneNumber",
    "employeeOrgData.division",
]
#: strings that are more than random text to some function
INTERESTING = [
    "",
    " ",
    "True",
    "False",
    "true",
    "0",
    "1",
    "-1",
    "7",
    "&HF",
    "&H" + "F" * 20,
    "9" * 30,
    "9" * 5_000,
    "1.5",
    "1e999",
    "(a|aa)+$",
    "(?<g>\\w+)@(\\w+)",
    "(?<g>(a|aa)+)$",
    "[",
    "(?P<x",
    "\\k<nope>",
    "$1${g}$$",
    "\\g<9>",
    "yyyy-MM-dd",
    "yyyyMMddHHmmss.fZ",
    "%d%d%d%d%d%d%d%d%d%d%d%d",
    "dddd, MMMM d",
    "'unterminated",
    "y" * 200,
    "DateTimeStyles.AssumeUniversal",
    "yyyy",
    "m",
    "d",
    "ww",
    "tr-TR",
    "en-US",
    "not a culture!",
    "1/1/0001 12:00:00 AM",
    "12/31/9999 11:59:59 PM",
    "2020-02-29T23:59:59Z",
    "a" * 60 + "!",
    " " * 400 + "x",
    "\ud800",
    "x\udfffy",
    "é" * 50,
    "İstanbul ǅ ß ﬁ",
    ",;:",
]


def nest(depth: int, inner: Any, box: Any) -> Any:
    for _ in range(depth):
        inner = box(inner)
    return inner


HOSTILE_VALUES: list[Any] = [
    *INTERESTING,
    nest(900, "x", lambda v: [v]),  # JSON allows 1,024 levels: past Python's recursion limit
    nest(900, "x", lambda v: {"k": v}),
    nest(900, "x", lambda v: [v, "y"]),
    10**5_000,  # past the 4,300 digits Python prints
    "x" * 20_000,
    "\t\n\r\x00\x1b",
    2**63,
    -(2**63) - 1,
    10**400,
    1e308,
    -0.0,
    [],
    [None],
    [[["deep"]]],
    [{"appRoleId": "00000000-0000-0000-0000-000000000000"}],
    [{"value": "Licensed", "displayName": "Licensed"}, {"value": 3}],
    {"nested": {"deeper": ["x"]}},
    ["a"] * 2_000,
]


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, picked in proportion to its weight."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]

    @st.composite
    def pick(draw: st.DrawFn) -> Any:
        return draw(pool[draw(st.integers(0, len(pool) - 1))])

    return pick()


leaves = weighted(
    (6, st.sampled_from(ATTRIBUTES).map(lambda a: f"[{a}]")),
    (2, st.text(max_size=12).map(quote)),
    (4, st.sampled_from(INTERESTING).map(quote)),
    (1, st.integers(min_value=-(2**70), max_value=2**70).map(str)),
    (3, st.integers(min_value=-3, max_value=12).map(str)),
    (1, st.sampled_from(["&HF7", "&H7FFFFFFFFFFFFFFF", "&H" + "F" * 17, "1.5", "-0", "007"])),
    (1, st.sampled_from(["vbTextCompare", "vbBinaryCompare", "Nothing", ""])),
)
OPERATORS = st.sampled_from(["=", "<>", "<", "<=", ">", ">="])


def calls(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Calls of every function, with an argument count that mostly fits its signature,
    comparisons where conditions go and VB names where they are allowed."""
    comparison = st.tuples(children, OPERATORS, children).map(" ".join)

    def call_of(spec: Any) -> st.SearchStrategy[str]:
        low = spec.min_args
        high = spec.max_args if spec.max_args is not None else low + 5
        count = st.one_of(st.integers(low, high), st.integers(low, high), st.integers(0, 8))

        def arguments(n: int) -> st.SearchStrategy[tuple[str, ...]]:
            parts = []
            for i in range(n):
                if i in spec.conditions:
                    parts.append(st.one_of(comparison, children))
                elif i in spec.enums:
                    parts.append(st.one_of(st.sampled_from(sorted(spec.enums[i])), children))
                else:
                    parts.append(children)
            return st.tuples(*parts)

        return count.flatmap(arguments).map(lambda args: f"{spec.name}({', '.join(args)})")

    specs = [(4, call_of(FUNCTIONS[name])) for name in sorted(FUNCTIONS)]
    misspelled = st.tuples(st.sampled_from(["Swich", "left", "IIf"]), st.lists(children)).map(
        lambda t: f"{t[0]}({', '.join(t[1])})"
    )
    return weighted(*specs, (1, misspelled), (2, comparison))


well_formed = st.recursive(leaves, calls, max_leaves=12)


def mutate(text: str, position: int, junk: str, cut: int) -> str:
    at = position % (len(text) + 1)
    return text[:at] + junk + text[at + cut :]


mutated = st.builds(
    mutate,
    well_formed,
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from(["", "(", ")", "[", "]", ",", '"', "\\", "&", "&H", "=", "==", "'", "\u201c"]),
    st.integers(min_value=0, max_value=3),
)
deep = st.builds(
    lambda depth, inner, name: f"{name}(" * depth + inner + ")" * depth,
    st.integers(min_value=MAX_NESTING - 3, max_value=MAX_NESTING + 40),
    leaves,
    st.sampled_from(["ToLower", "Coalesce", "Not", "CStr", "ConvertToBase64", "Left"]),
)
expressions = weighted((16, well_formed), (2, mutated), (1, deep), (1, st.text(max_size=40)))

scalars = weighted(
    (1, st.none()),
    (1, st.booleans()),
    (1, st.integers(min_value=-(2**64), max_value=2**64)),
    (1, st.floats(allow_nan=False, allow_infinity=False)),
    (3, st.text(max_size=20)),
    (4, st.sampled_from(HOSTILE_VALUES)),
)
values = st.recursive(
    scalars,
    lambda c: st.one_of(
        st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=3)
    ),
    max_leaves=6,
)
users = st.dictionaries(
    st.sampled_from(["a", "b", "n", "items", "obj", "id", "extensionAttribute1", "businessPhones"]),
    values,
    max_size=5,
).map(lambda u: {**u, "onPremisesExtensionAttributes": {"extensionAttribute1": u.get("a")}})
contexts = st.builds(
    MappingContext,
    is_soft_deleted=st.booleans(),
    app_role_assignments=st.sampled_from(
        [
            (),
            ({"appRoleId": "r1", "value": "Licensed", "displayName": "Licensed"},),
            ({"appRoleId": "00000000-0000-0000-0000-000000000000"}, {"value": None}),
        ]
    ),
)


def check(text: str, user_list: list[dict[str, Any]], ctx: MappingContext) -> None:
    start = time.perf_counter()
    try:
        compiled = compile_expression(text, regex_timeout=REGEX_TIMEOUT)
    except MappingError:  # ExpressionSyntaxError is one
        compiled = None
    took = time.perf_counter() - start
    assert took < BOUND, f"compiling took {took:.2f} s: {text!r}"
    if compiled is None:
        return
    for user in user_list:
        start = time.perf_counter()
        try:
            compiled.evaluator(user, ctx)
        except UserDataError:
            pass
        took = time.perf_counter() - start
        assert took < BOUND, f"evaluating took {took:.2f} s: {text!r} on {user!r}"


def test_only_our_errors_come_out_and_in_time() -> None:
    seen = [0]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not os.environ.get("BULKPROV_FUZZ_RANDOM"),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        st.lists(expressions, min_size=BATCH, max_size=BATCH),
        st.lists(users, min_size=1, max_size=3),
        contexts,
    )
    def fuzz(batch: list[str], user_list: list[dict[str, Any]], ctx: MappingContext) -> None:
        for text in batch:
            seen[0] += 1
            check(text, user_list, ctx)

    fuzz()
    assert seen[0] >= EXAMPLES * BATCH >= 10_000


SCOPE_OPERATORS = list(get_args(ScopingOperator))  # all 14 (config lists them once)
clauses = st.builds(
    ScopingClause,
    attribute=st.sampled_from(["a", "b", "n", "items", "obj", "missing", "userType", "[a]", "x y"]),
    operator=st.sampled_from(SCOPE_OPERATORS),
    value=st.one_of(st.none(), st.text(max_size=10), st.sampled_from(INTERESTING)),
)
filters = st.builds(
    ScopingFilter,
    name=st.one_of(st.none(), st.text(max_size=8)),
    clauses=st.lists(clauses, min_size=1, max_size=4),
)


def test_scoping_filters_too() -> None:
    """The same promise for scoping filters: MappingError at compile, UserDataError per
    user, in time."""

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=not os.environ.get("BULKPROV_FUZZ_RANDOM"),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(filters, min_size=1, max_size=3), st.lists(users, min_size=1, max_size=3))
    def fuzz(scope_filters: list[ScopingFilter], user_list: list[dict[str, Any]]) -> None:
        start = time.perf_counter()
        try:
            scope = compile_scope(scope_filters, regex_timeout=REGEX_TIMEOUT)
        except MappingError:
            return
        assert time.perf_counter() - start < BOUND
        for user in user_list:
            start = time.perf_counter()
            try:
                decision = scope.evaluate(user)
                assert isinstance(decision.in_scope, bool)
            except UserDataError:
                pass
            assert time.perf_counter() - start < BOUND

    fuzz()
