"""② Scope: Entra's attribute scoping filters, compiled into one predicate per config.

"If multiple clauses are created in a single scoping filter, they're evaluated together
using AND logic … multiple scoping filters … are evaluated together by using OR logic"
(SCOPING). No filters means everyone passes. A :class:`ScopeDecision` also says *why*,
naming the deciding clause, as provision-on-demand shows it.

Operator semantics (SCOPING's list; [I] marks our reading where Microsoft is silent):

* Null rule: "Scoping filters will return "false" if the value is null / empty", for every
  operator except ``IS NULL`` (true when null or empty) and ``IS NOT NULL``.
* ``EQUALS`` / ``NOT EQUALS`` / ``Includes`` are case-sensitive (documented); so is
  ``ENDS_WITH`` [I: .NET ``String.EndsWith`` is case-sensitive]. A Graph boolean compares
  with ``"true"``/``"false"`` in any case [I].
* ``&`` / ``!&``: true if the attribute's value occurs (does not occur) *in the clause's
  value* — "the evaluated attribute exists in the input string value"; case-sensitive [I].
* ``Greater_Than`` / ``Greater_Than_OR_EQUALS``: the clause value must be an integer
  (checked when the config loads); a user value that is not an integer is false [I].
* ``IS TRUE`` / ``IS FALSE``: a Graph boolean, or the strings "true"/"false" in any case.
* ``REGEX MATCH`` / ``NOT REGEX MATCH``: .NET patterns (named groups translated). The
  match is a *search*, not a whole-value match: the service is .NET, whose
  ``Regex.IsMatch`` is unanchored, so a pattern is anchored only by ``^``/``$`` as written.
  Microsoft's examples (``.*\\@domain.com``) give the documented result either way;
  Microsoft does not state the anchoring (facts.md §8 lists it as unconfirmed) [I]. Each
  match has ``limits.regex_timeout`` seconds (:mod:`bulkprov.mapping.regex`); one that
  runs out fails that user with :class:`~bulkprov.errors.UserDataError` (never "out of
  scope", which would disable the account).

Not supported as scoping attributes (SCOPING, KNOWN): ``appRoleAssignments``,
``userType``, ``manager``, date-type and multi-valued attributes; they are rejected when
the config loads. An attribute that turns out multi-valued at run time raises
:class:`~bulkprov.errors.UserDataError` for that user.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bulkprov.config import ScopingFilter
from bulkprov.errors import MappingError, UserDataError
from bulkprov.mapping.attributes import is_valid_name, raw_reader, select_names
from bulkprov.mapping.regex import DEFAULT_REGEX_TIMEOUT, PatternError, compile_dotnet, timed_out

_UNSUPPORTED = {
    "appRoleAssignments": "app role assignments are not supported in scoping filters",
    "userType": "userType is not supported in scoping filters",
    "manager": "manager (a reference attribute) is not supported in scoping filters",
    "IsSoftDeleted": "IsSoftDeleted is computed during provisioning, not a user attribute",
    "memberOf": "group membership (IsMemberOf) is not supported in scoping filters",
}
#: Graph user properties that hold several values (or an object)
_MULTI_VALUED = frozenset(
    {
        "businessPhones",
        "proxyAddresses",
        "otherMails",
        "imAddresses",
        "identities",
        "assignedLicenses",
        "assignedPlans",
        "provisionedPlans",
        "licenseAssignmentStates",
        "interests",
        "pastProjects",
        "responsibilities",
        "schools",
        "skills",
        "onPremisesProvisioningErrors",
        "serviceProvisioningErrors",
        "onPremisesExtensionAttributes",
        "employeeOrgData",
        "passwordProfile",
        "mailboxSettings",
        "signInActivity",
        "authorizationInfo",
    }
)
#: Graph user properties of date type ("date-type attributes … aren't supported")
_DATES = frozenset(
    {
        "createdDateTime",
        "deletedDateTime",
        "employeeHireDate",
        "employeeLeaveDateTime",
        "lastPasswordChangeDateTime",
        "onPremisesLastSyncDateTime",
        "lastDirSyncTime",
        "refreshTokensValidFromDateTime",
        "signInSessionsValidFromDateTime",
        "externalUserStateChangeDateTime",
        "birthday",
        "hireDate",
    }
)
_UNARY = frozenset({"IS TRUE", "IS FALSE", "IS NULL", "IS NOT NULL"})
_INTEGER = re.compile(r"\s*[+-]?\d+\s*\Z")


@dataclass(frozen=True, slots=True)
class ScopeDecision:
    """Whether a user is in scope, and the reason (the deciding clause)."""

    in_scope: bool
    reason: str


#: a clause's test of one Graph user
Test = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class _Clause:
    test: Test
    text: str  # 'department EQUALS "Sales"'
    false_reason: str  # 'filter "Sales" clause department EQUALS "Sales" is false'
    false_decision: ScopeDecision


@dataclass(frozen=True, slots=True)
class _Filter:
    label: str
    clauses: tuple[_Clause, ...]
    matched: ScopeDecision


def _int64(s: str) -> int | None:
    """The integer ``s`` spells, when it is one within .NET's Int64; else None."""
    if not _INTEGER.match(s):
        return None
    if len(s.strip().lstrip("+-").lstrip("0")) > 19:
        return None
    number = int(s)
    return number if -(2**63) <= number < 2**63 else None


def _short(value: str) -> str:
    return repr(value) if len(value) <= 40 else repr(value[:18] + "…" + value[-18:])


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _as_text(value: Any, attribute: str) -> str | None:
    """The string a clause compares; None for null/empty (the general null rule)."""
    if value is None or value == "":
        return None
    if value.__class__ is str:
        return value
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, list):
        if not value:
            return None
        raise UserDataError(
            f"scoping filter on {attribute}: the attribute is multi-valued, which scoping "
            "filters do not support"
        )
    raise UserDataError(f"scoping filter on {attribute}: the attribute is not a simple value")


def _clause_test(
    attribute: str,
    operator: str,
    value: str | None,
    fail: Callable[[str], MappingError],
    *,
    where: str,
    regex_timeout: float,
) -> Test:
    read = raw_reader(attribute)

    def get(user: Mapping[str, Any]) -> str | None:
        return _as_text(read(user), attribute)

    if operator == "IS NULL":

        def is_null(user: Mapping[str, Any]) -> bool:
            return get(user) is None

        return is_null
    if operator == "IS NOT NULL":

        def is_not_null(user: Mapping[str, Any]) -> bool:
            return get(user) is not None

        return is_not_null
    if operator in ("IS TRUE", "IS FALSE"):
        want = operator == "IS TRUE"

        def is_bool(user: Mapping[str, Any]) -> bool:
            raw = read(user)
            if raw is want:
                return True
            if isinstance(raw, str):
                return raw.strip().lower() == ("true" if want else "false")
            return False

        return is_bool
    assert value is not None
    if operator in ("EQUALS", "NOT EQUALS"):
        negate = operator == "NOT EQUALS"
        low = value.lower()

        def equals(user: Mapping[str, Any]) -> bool:
            raw = read(user)
            if raw is True or raw is False:
                s = "true" if raw else "false"
                return (s == low) != negate
            s2 = _as_text(raw, attribute)
            if s2 is None:
                return False
            return (s2 == value) != negate

        return equals
    if operator in ("REGEX MATCH", "NOT REGEX MATCH"):
        try:
            pattern = compile_dotnet(value)
        except PatternError as exc:
            at = f" at position {exc.pos}" if exc.pos is not None else ""
            caret = f"\n    {value}\n    {' ' * (exc.pos or 0)}^" if exc.pos is not None else ""
            raise fail(f"invalid regular expression{at}: {exc.msg}{caret}") from exc
        search = pattern.search
        negate = operator == "NOT REGEX MATCH"
        timeout = regex_timeout
        pattern_text = value

        def regex(user: Mapping[str, Any]) -> bool:
            s = get(user)
            if s is None:
                return False
            try:
                return (search(s, timeout=timeout) is None) == negate
            except TimeoutError:
                raise timed_out(where, pattern_text, timeout) from None

        return regex
    if operator in ("Greater_Than", "Greater_Than_OR_EQUALS"):
        limit = _int64(value)
        if limit is None:
            raise fail(f"{operator} needs an integer value (a 64-bit integer), got {_short(value)}")
        bound = limit
        inclusive = operator == "Greater_Than_OR_EQUALS"

        def greater(user: Mapping[str, Any]) -> bool:
            raw = read(user)
            if isinstance(raw, bool):
                return False
            if isinstance(raw, int):
                number: int | None = raw
            else:
                s = _as_text(raw, attribute)
                # "the attribute on the user must be an integer": one that is not, or that
                # is too long to be one .NET reads, makes the clause false [I].
                number = None if s is None else _int64(s)
            if number is None:
                return False
            return number >= bound if inclusive else number > bound

        return greater
    if operator == "Includes":

        def includes(user: Mapping[str, Any]) -> bool:
            s = get(user)
            return s is not None and value in s

        return includes
    if operator == "ENDS_WITH":

        def ends_with(user: Mapping[str, Any]) -> bool:
            s = get(user)
            return s is not None and s.endswith(value)

        return ends_with
    if operator in ("&", "!&"):
        negate = operator == "!&"

        def within(user: Mapping[str, Any]) -> bool:
            s = get(user)
            return s is not None and (s in value) != negate

        return within
    raise fail(f"unknown operator {operator!r}")  # pragma: no cover - config.py rejects it


class ScopeEvaluator:
    """Compiled scoping filters. Build it with :func:`compile_scope`.

    Attributes:
        source_attributes: Graph user properties the clauses read (for ``$select``).
    """

    def __init__(self, filters: Sequence[_Filter], source_attributes: frozenset[str]) -> None:
        self._filters = tuple(filters)
        self.source_attributes = source_attributes
        self._everyone = ScopeDecision(True, "no scoping filters")
        self._cache: dict[tuple[int, ...], ScopeDecision] = {}

    def __len__(self) -> int:
        return len(self._filters)

    def evaluate(self, user: Mapping[str, Any]) -> ScopeDecision:
        """Decide one Graph user. Decisions are shared, immutable objects.

        Raises:
            UserDataError: a clause's attribute is multi-valued or complex for this user.
        """
        filters = self._filters
        if not filters:
            return self._everyone
        if len(filters) == 1:
            f = filters[0]
            for clause in f.clauses:
                if not clause.test(user):
                    return clause.false_decision
            return f.matched
        failed: list[int] = []
        for f in filters:
            for j, clause in enumerate(f.clauses):
                if not clause.test(user):
                    failed.append(j)
                    break
            else:
                return f.matched
        key = tuple(failed)
        decision = self._cache.get(key)
        if decision is None:
            reasons = "; ".join(
                f.clauses[j].false_reason for f, j in zip(filters, failed, strict=True)
            )
            decision = ScopeDecision(False, f"no scoping filter matched: {reasons}")
            if len(self._cache) < 4096:
                self._cache[key] = decision
        return decision


def compile_scope(
    filters: Sequence[ScopingFilter],
    config_path: str | None = None,
    *,
    regex_timeout: float = DEFAULT_REGEX_TIMEOUT,
) -> ScopeEvaluator:
    """Compile scoping filters (clauses AND within a filter, filters OR across).

    ``regex_timeout``: seconds one ``REGEX MATCH`` may take (``limits.regex_timeout``).

    Raises:
        MappingError: naming ``scope.filters[i].clauses[j]``: an unsupported attribute, a
            missing value for a binary operator, a non-integer for ``Greater_Than``, an
            invalid regular expression.
    """
    compiled: list[_Filter] = []
    select: set[str] = set()
    for i, flt in enumerate(filters):
        label = _quote(flt.name) if flt.name else f"#{i + 1}"
        clauses: list[_Clause] = []
        for j, clause in enumerate(flt.clauses):
            key = f"scope.filters[{i}].clauses[{j}]"

            def fail(message: str, key: str = key) -> MappingError:
                return MappingError(message, path=config_path, key=key)

            attribute = clause.attribute.strip()
            if attribute.startswith("[") and attribute.endswith("]"):
                attribute = attribute[1:-1].strip()
            if not is_valid_name(attribute):
                raise fail(f"invalid attribute name {clause.attribute!r}")
            top = attribute.split(".", 1)[0]
            if top in _UNSUPPORTED:
                raise fail(_UNSUPPORTED[top])
            if attribute in _MULTI_VALUED:
                raise fail(
                    f"{attribute} is multi-valued or complex; scoping filters support "
                    "single-valued attributes only"
                )
            if attribute in _DATES:
                raise fail(f"{attribute} is a date; date attributes are not supported in scoping")
            operator = clause.operator
            value = clause.value
            if operator in _UNARY:
                if value:
                    raise fail(f"{operator} takes no value (got {value!r})")
                value = None
            elif value is None:
                raise fail(f"{operator} needs a value")
            text = f"{attribute} {operator}" + (f" {_quote(value)}" if value is not None else "")
            test = _clause_test(
                attribute,
                operator,
                value,
                fail,
                where=f"scoping filter {label} clause {attribute} {operator}",
                regex_timeout=regex_timeout,
            )
            reason = f"filter {label} clause {text} is false"
            clauses.append(_Clause(test, text, reason, ScopeDecision(False, reason)))
            select |= select_names(attribute)
        names = " AND ".join(c.text for c in clauses)
        matched = ScopeDecision(True, f"filter {label} matched: {names}")
        compiled.append(_Filter(label, tuple(clauses), matched))
    return ScopeEvaluator(compiled, frozenset(select))


#: a shorter name for the same class
Scope = ScopeEvaluator

__all__ = ["Scope", "ScopeDecision", "ScopeEvaluator", "compile_scope"]
