"""The expression language under hostile input: nesting, huge numbers, invalid Unicode.

Each case used to end in a Python exception (``RecursionError``, ``ValueError``,
``UnicodeEncodeError``) that escaped the compiler or the evaluator; now a problem in the
expression is an :class:`ExpressionSyntaxError` pointing at it and a problem in a user's
data is a :class:`UserDataError` for that user.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bulkprov.config import AttributeMapping
from bulkprov.errors import UserDataError
from bulkprov.mapping import (
    ExpressionSyntaxError,
    MappingContext,
    compile_expression,
    compile_mappings,
    parse,
)
from bulkprov.mapping.parser import MAX_NESTING
from bulkprov.mapping.values import MAX_TEXT_LENGTH


def nested(depth: int, inner: str = "[a]") -> str:
    return "ToLower(" * depth + inner + ")" * depth


class TestNesting:
    def test_330_nested_calls_are_a_syntax_error_at_the_101st(self) -> None:
        """The issue's case: 330 nested calls (about 2,000 characters) raised RecursionError."""
        text = nested(330)
        assert len(text) < 10_000
        with pytest.raises(ExpressionSyntaxError) as info:
            parse(text)
        assert f"nested more than {MAX_NESTING} deep" in info.value.hint
        assert info.value.position == len("ToLower(") * MAX_NESTING

    def test_the_limit_itself_compiles_and_evaluates(self) -> None:
        """MAX_NESTING levels parse, compile and run (and still do from a deep call stack)."""
        compiled = compile_expression(nested(MAX_NESTING))
        assert compiled.evaluate({"a": "ABC"}) == "abc"

        def deep(levels: int) -> object:
            return deep(levels - 1) if levels else compiled.evaluate({"a": "X"})

        assert deep(400) == "x"

    def test_compile_mappings_names_the_row(self) -> None:
        """Through a mapping table the error names the row, as every expression error does."""
        with pytest.raises(ExpressionSyntaxError) as info:
            compile_mappings(
                [
                    AttributeMapping(target="userName", source="mail", matching_precedence=1),
                    AttributeMapping(target="displayName", expression=nested(330)),
                ],
                config_path="c.toml",
            )
        assert info.value.key == "mappings[1].expression"
        assert info.value.path == "c.toml"

    def test_comparisons_and_empty_slots_do_not_count_as_nesting(self) -> None:
        """Only calls nest: arguments side by side do not add depth."""
        wide = 'Join("", ' + ", ".join(['IIF([a] = "x", "1", "2")'] * 300) + ")"
        assert compile_expression(wide).evaluate({"a": "x"}) == "1" * 300


class TestNumbers:
    @pytest.mark.parametrize(
        "literal",
        [
            "9223372036854775807",
            "-9223372036854775808",
            "&H7FFFFFFFFFFFFFFF",
            "&H0000000000000000000F7",
        ],
    )
    def test_int64_literals_are_accepted(self, literal: str) -> None:
        assert compile_expression(f"CStr({literal})").constant

    @pytest.mark.parametrize(
        "literal",
        [
            "9223372036854775808",
            "-9223372036854775809",
            "9" * 4400,
            "&H8000000000000000",
            "&H" + "F" * 3572,  # the issue's case: ValueError from the lexer
        ],
    )
    def test_literals_beyond_int64_are_syntax_errors_at_their_position(self, literal: str) -> None:
        text = f"Left([a], {literal})"
        with pytest.raises(ExpressionSyntaxError) as info:
            compile_expression(text)
        assert "Int64" in info.value.hint
        assert info.value.position == len("Left([a], ")
        assert len(str(info.value)) < 1_000  # the literal is cut, not printed whole

    def test_non_ascii_digits_are_not_numbers(self) -> None:
        """'²'.isdigit() is true in Python; a number is ASCII digits (as in VB)."""
        for text in ("Left([a], ²)", "Left([a], ٣)", "Left([a], 1²)"):
            with pytest.raises(ExpressionSyntaxError):
                compile_expression(text)

    def test_constant_argument_too_large_fails_at_compile(self) -> None:
        """The issue's case: 4,301+ digits in a string argument (folded) raised ValueError."""
        text = f'Left([a], "{"9" * 4400}")'
        with pytest.raises(ExpressionSyntaxError) as info:
            compile_expression(text)
        assert "outside the range of a 64-bit integer" in info.value.hint
        assert info.value.position == len("Left([a], ")

    @pytest.mark.parametrize(
        "value", ["9" * 4400, "9223372036854775808", "&H" + "F" * 17, " -" + "1" * 30 + " "]
    )
    def test_user_argument_too_large_is_user_data_error(self, value: str) -> None:
        compiled = compile_expression("Left([a], [n])")
        with pytest.raises(UserDataError, match="outside the range of a 64-bit integer"):
            compiled.evaluate({"a": "abc", "n": value})

    def test_int64_arguments_still_work(self) -> None:
        compiled = compile_expression("Left([a], [n])")
        assert compiled.evaluate({"a": "abc", "n": "9223372036854775807"}) == "abc"
        assert compiled.evaluate({"a": "abc", "n": " &H2 "}) == "ab"
        assert compile_expression("BitAnd([n], &HF)").evaluate({"n": "-1"}) == "15"


class TestInvalidUnicode:
    @pytest.mark.parametrize("function", ["ConvertToUTF8Hex", "ConvertToBase64"])
    @pytest.mark.parametrize("value", ["\ud800", "ab\udfffc", "x\udbff"])
    def test_lone_surrogate_is_user_data_error(self, function: str, value: str) -> None:
        """The issue's case: UnicodeEncodeError escaped the evaluator."""
        compiled = compile_expression(f"{function}([a])")
        with pytest.raises(UserDataError, match="invalid character"):
            compiled.evaluate({"a": value})

    def test_the_row_fails_for_that_user_only(self) -> None:
        mapper = compile_mappings(
            [
                AttributeMapping(target="userName", source="mail", matching_precedence=1),
                AttributeMapping(target="externalId", expression="ConvertToBase64([givenName])"),
            ]
        )
        with pytest.raises(UserDataError, match=r"^externalId: ConvertToBase64"):
            mapper.map_user({"mail": "a@b.c", "givenName": "Jo\ud800"})
        ok = mapper.map_user({"mail": "a@b.c", "givenName": "Jo😀"})
        assert ok.values["externalId"] == "SgBvAD3YAN4="

    def test_surrogate_pairs_are_characters(self) -> None:
        """A real astral character (one code point in Python) still encodes."""
        assert compile_expression("ConvertToUTF8Hex([a])").evaluate({"a": "😀"}) == "F09F9880"


#: a pattern the regex package cannot save from backtracking: Fibonacci many ways to split
#: a run of a's, and the "!" makes every one fail (`re` takes over an hour on 50 characters)
BACKTRACKS = "(a|aa)+$"
HOSTILE = "a" * 60 + "!"
#: the time limit these tests give (the default is 0.1 s)
LIMIT = 0.05
#: how long a timed-out call may take in all: the limit, plus slack for a busy machine
BOUND = 2.0


def timed(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    start = time.perf_counter()
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test looks at what came out
        return exc, time.perf_counter() - start
    return None, time.perf_counter() - start


class TestRegexTimeLimit:
    @pytest.mark.parametrize(
        "expression",
        [
            f'Replace([a], , "{BACKTRACKS}", , "x", , )',
            'Replace([a], , "(?<g>(a|aa)+)$", "g", "x", , )',
            'Replace([empty], , "(?<g>(a|aa)+$)", "g", , [a], )',
            'Replace([a], , [pattern], , "x", , )',
        ],
        ids=["replacementValue", "regexGroupName", "replacementAttributeName", "dynamic"],
    )
    def test_a_backtracking_match_fails_the_user_in_time(self, expression: str) -> None:
        """The same pattern per user blocked the event loop for as long as it ran."""
        compiled = compile_expression(expression, regex_timeout=LIMIT)
        user = {"a": HOSTILE, "pattern": BACKTRACKS}
        error, took = timed(lambda: compiled.evaluate(user))
        assert isinstance(error, UserDataError), error
        assert "took longer than 0.05 s" in str(error)
        assert "(a|aa)+" in str(error)
        assert took < BOUND
        # the same expression is fine on an ordinary value
        assert compiled.evaluate({"a": "aaaa", "pattern": BACKTRACKS, "empty": ""}) is not None

    def test_map_user_names_the_target(self) -> None:
        mapper = compile_mappings(
            [
                AttributeMapping(target="userName", source="mail", matching_precedence=1),
                AttributeMapping(
                    target="displayName", expression=f'Replace([a], , "{BACKTRACKS}", , "", , )'
                ),
            ],
            regex_timeout=LIMIT,
        )
        error, took = timed(lambda: mapper.map_user({"mail": "m@x.y", "a": HOSTILE}))
        assert isinstance(error, UserDataError)
        assert str(error).startswith("displayName: Replace: matching the regular expression")
        assert took < BOUND
        assert mapper.map_user({"mail": "m@x.y", "a": "aa"}).values["displayName"] == ""

    def test_a_folded_pattern_fails_the_config_at_load_naming_the_mapping(self) -> None:
        """The issue's case: a constant Replace folded for seconds at config load."""
        rows = [
            AttributeMapping(target="userName", source="mail", matching_precedence=1),
            AttributeMapping(
                target="nickName", expression=f'Replace("{HOSTILE}", , "{BACKTRACKS}", , "x", , )'
            ),
        ]
        error, took = timed(
            lambda: compile_mappings(rows, config_path="c.toml", regex_timeout=LIMIT)
        )
        assert isinstance(error, ExpressionSyntaxError)
        assert error.key == "mappings[1].expression" and error.path == "c.toml"
        assert "took longer than 0.05 s" in error.hint
        assert error.position == 0
        assert took < BOUND

    def test_the_issues_pattern_no_longer_takes_seconds(self) -> None:
        """(a+)+$ on "a"*26 + "b" folded for 4.9 s with re; the regex package does not
        backtrack on it, and anything that does is cut at the limit."""
        text = 'Replace("' + "a" * 26 + 'b", , "(a+)+$", , "x", , )'
        error, took = timed(lambda: compile_expression(text))
        assert error is None and took < BOUND

    def test_the_limit_comes_from_the_config(self, tmp_path: Path) -> None:
        """limits.regex_timeout reaches the mapper and the scope that the pipeline builds."""
        from bulkprov.commands.starter import STARTER_TOML
        from bulkprov.config import load_config
        from bulkprov.pipeline import Engine

        text = STARTER_TOML.replace("[state]", "[limits]\nregex_timeout = 0.05\n\n[state]")
        text += f'\n[[mappings]]\ntarget = "nickName"\nexpression = \'Replace([a], , "{BACKTRACKS}", , "", , )\'\n'
        text = text.replace(
            "# [[scope.filters]]",
            '[[scope.filters]]\nclauses = [{ attribute = "b", operator = "NOT REGEX MATCH", '
            f'value = "{BACKTRACKS}" }}]\n# [[scope.filters]]',
        )
        (tmp_path / "c.toml").write_text(text)
        cfg = load_config(tmp_path / "c.toml")
        assert cfg.limits.regex_timeout == 0.05
        engine = Engine(cfg)
        user = {"id": "00000000-0000-0000-0000-000000000001", "userPrincipalName": "a@b.c"}
        error, took = timed(lambda: engine.evaluate({**user, "a": HOSTILE, "b": "x"}))
        assert isinstance(error, UserDataError) and "nickName: Replace" in str(error)
        assert took < BOUND
        error, took = timed(lambda: engine.evaluate({**user, "a": "x", "b": HOSTILE}))
        assert isinstance(error, UserDataError) and "scoping filter #1" in str(error)
        assert took < BOUND


class TestValueGrowth:
    def test_nested_growth_stops_at_the_length_limit(self) -> None:
        """16 nested ConvertToBase64 (×2.7 each) on a constant exhausted memory at config
        load (the fuzz test's first find); now the fold stops at a million characters."""
        text = "ConvertToBase64(" * 16 + '"' + "x" * 100 + '"' + ")" * 16
        error, took = timed(lambda: compile_expression(text))
        assert isinstance(error, ExpressionSyntaxError)
        assert f"at most {MAX_TEXT_LENGTH:,}" in error.hint
        assert took < BOUND

    @pytest.mark.parametrize(
        ("expression", "user"),
        [
            ('Replace([a], "x", , , [n], , )', {"a": "x" * 20_000, "n": "y" * 100}),
            ('Replace([a], "x", , , , , [n])', {"a": "x" * 20_000, "n": "x" * 100}),
            ("Replace([a], , [p], , [n], , )", {"a": "x" * 20_000, "p": "", "n": "y" * 100}),
            ('Replace([a], , "(?=(.*))", , "$1", , )', {"a": "x" * 3_000}),
            ('Replace([a], , "(?<g>x)", "g", [n], , )', {"a": "x" * 20_000, "n": "y" * 100}),
            ("Join([n], [items])", {"items": ["x"] * 2_000, "n": "y" * 1_000}),
            ("Append([a], [a])", {"a": "x" * 600_000}),
            ("ConvertToUTF8Hex([a])", {"a": "é" * 200_000}),
        ],
    )
    def test_a_users_value_grown_past_the_limit_fails_that_user(
        self, expression: str, user: dict[str, object]
    ) -> None:
        compiled = compile_expression(expression)
        error, took = timed(lambda: compiled.evaluate(user))
        assert isinstance(error, UserDataError), error
        assert "characters long; a value may be at most 1,000,000" in str(error)
        assert took < BOUND

    def test_values_under_the_limit_still_grow(self) -> None:
        compiled = compile_expression('Replace([a], , "(?<c>.)", , "${c}${c}", , )')
        assert compiled.evaluate({"a": "ab" * 1_000}) == "aabb" * 1_000

    def test_remove_duplicates_is_not_quadratic(self) -> None:
        """200,000 distinct values took minutes (a list scanned for each value)."""
        compiled = compile_expression("Count(RemoveDuplicates([items]))")
        items = [str(i % 150_000) for i in range(200_000)]
        error, took = timed(lambda: compiled.evaluate({"items": items}))
        assert error is None and took < BOUND
        assert compiled.evaluate({"items": items}) == "150000"
        mixed = [{"a": 1}, "x", {"a": 1}, "x", ["y"], ["y"]]
        assert compile_expression("RemoveDuplicates([items])").evaluate({"items": mixed}) == [
            {"a": 1},
            "x",
            ["y"],
        ]

    def test_error_messages_do_not_carry_a_megabyte_of_value(self) -> None:
        compiled = compile_expression("CDate([a])")
        with pytest.raises(UserDataError) as info:
            compiled.evaluate({"a": "z" * 1_000_000})
        assert len(str(info.value)) < 500
        assert "(1,000,000 characters)" in str(info.value)


class TestDeepValues:
    """JSON allows values nested 1,024 deep, more than Python's recursion limit: reading
    and flattening a user's value must not recurse once per level."""

    @staticmethod
    def deep(levels: int) -> object:
        value: object = "x"
        for _ in range(levels):
            value = [value]
        return value

    @pytest.mark.parametrize("expression", ["[a]", "CStr([a])", 'Join(",", [a])', "Count([a])"])
    def test_nested_lists_fail_the_user(self, expression: str) -> None:
        compiled = compile_expression(expression)
        with pytest.raises(UserDataError, match="nested more than 32 deep"):
            compiled.evaluator({"a": self.deep(1_000)}, MappingContext())

    def test_one_element_lists_unwrap_without_recursion(self) -> None:
        from bulkprov.mapping.values import text

        assert text(self.deep(5_000), "F") == "x"

    def test_an_integer_too_long_to_print_fails_the_user(self) -> None:
        compiled = compile_expression("CStr([n])")
        with pytest.raises(UserDataError, match="too long to read"):
            compiled.evaluator({"n": 10**5_000}, MappingContext())
