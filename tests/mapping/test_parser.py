"""Lexer and parser: tokens, AST shapes, and error messages with carets."""

from __future__ import annotations

import pytest

from bulkprov.errors import ConfigError, MappingError
from bulkprov.mapping import ExpressionSyntaxError, parse
from bulkprov.mapping.ast import (
    Attribute,
    Comparison,
    Constant,
    Empty,
    Function,
    Identifier,
    unparse,
    walk,
)
from bulkprov.mapping.lexer import MAX_EXPRESSION_LENGTH, tokenize


def syntax_error(text: str) -> ExpressionSyntaxError:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse(text)
    return info.value


def caret_column(error: ExpressionSyntaxError) -> int:
    """The 0-based column of the caret in the rendered excerpt."""
    caret_line = str(error).splitlines()[-1]
    return caret_line.index("^") - 4


class TestLexer:
    def test_kinds_and_offsets(self) -> None:
        """Each token carries its kind, decoded value and [start, end) offsets."""
        tokens = tokenize('IIF([a] >= -1.5, "x\\"y", &HF7)')
        assert [(t.kind, t.value, t.start, t.end) for t in tokens] == [
            ("NAME", "IIF", 0, 3),
            ("LPAREN", "(", 3, 4),
            ("ATTR", "a", 4, 7),
            ("OP", ">=", 8, 10),
            ("NUMBER", "-1.5", 11, 15),
            ("COMMA", ",", 15, 16),
            ("STRING", 'x"y', 17, 23),
            ("COMMA", ",", 23, 24),
            ("HEX", "247", 25, 29),
            ("RPAREN", ")", 29, 30),
            ("EOF", "", 30, 30),
        ]

    def test_string_escapes(self) -> None:
        """\\" and \\\\ are escapes; any other backslash pair is kept as written."""
        (token, _eof) = tokenize(r'"a\"b\\c\d"')
        assert token.value == 'a"b\\c\\d'

    @pytest.mark.parametrize("op", ["=", "<>", "<", "<=", ">", ">="])
    def test_comparison_operators(self, op: str) -> None:
        """All six VB comparison operators are tokens."""
        assert [t.value for t in tokenize(f"[a]{op}[b]")][1] == op

    def test_length_limit(self) -> None:
        """Entra's 10,000-character limit is enforced, with the caret at the limit."""
        text = '"' + "x" * MAX_EXPRESSION_LENGTH + '"'
        with pytest.raises(ExpressionSyntaxError) as info:
            tokenize(text)
        assert "at most 10,000" in info.value.hint
        assert info.value.position == MAX_EXPRESSION_LENGTH

    def test_exactly_at_the_limit_is_fine(self) -> None:
        """An expression of exactly 10,000 characters parses."""
        text = '"' + "x" * (MAX_EXPRESSION_LENGTH - 2) + '"'
        assert parse(text) == Constant("x" * (MAX_EXPRESSION_LENGTH - 2), 0, len(text))


class TestParser:
    def test_switch_with_empty_default(self) -> None:
        """The default Zoom active expression keeps its empty default slot as Empty."""
        node = parse('Switch([IsSoftDeleted], , "False", "True", "True", "False")')
        assert isinstance(node, Function)
        assert node.name == "Switch"
        assert node.args[0] == Attribute("IsSoftDeleted", 7, 22)
        assert node.args[1] == Empty(24, 24)
        assert [a.value for a in node.args[2:] if isinstance(a, Constant)] == [
            "False",
            "True",
            "True",
            "False",
        ]

    def test_replace_trailing_empty_slots(self) -> None:
        """Every omitted argument of Replace is an Empty node, including the last."""
        node = parse('Replace([x], , "re", , "", , )')
        assert isinstance(node, Function)
        assert [type(a).__name__ for a in node.args] == [
            "Attribute",
            "Empty",
            "Constant",
            "Empty",
            "Constant",
            "Empty",
            "Empty",
        ]

    def test_no_arguments_vs_empty_arguments(self) -> None:
        """F() has no arguments; F(,) has two empty ones."""
        assert parse("Guid()") == Function("Guid", (), 0, 6)
        node = parse("Coalesce(,)")
        assert isinstance(node, Function)
        assert node.args == (Empty(9, 9), Empty(10, 10))

    def test_numbers_are_constants(self) -> None:
        """Bare numbers (negative too) and VB hex literals become numeric constants."""
        node = parse("BitAnd(&HF, -12)")
        assert isinstance(node, Function)
        assert node.args == (
            Constant("15", 7, 10, numeric=True, raw="&HF"),
            Constant("-12", 12, 15, numeric=True, raw="-12"),
        )

    def test_comparison_and_identifier(self) -> None:
        """A comparison inside IIF and a bare VB name parse into their own nodes."""
        node = parse('IIF([country]="USA","US",InStr([c], "a", 1, vbTextCompare))')
        assert isinstance(node, Function)
        cond = node.args[0]
        assert isinstance(cond, Comparison)
        assert (cond.op, cond.left, cond.right) == (
            "=",
            Attribute("country", 4, 13),
            Constant("USA", 14, 19),
        )
        inner = node.args[2]
        assert isinstance(inner, Function)
        assert inner.args[3] == Identifier("vbTextCompare", 44, 57)

    @pytest.mark.parametrize(
        "text",
        [
            "[mail]",
            '"United States"',
            'Switch([IsSoftDeleted], , "False", "True", "True", "False")',
            'Replace([x], , "\\\\d+", , "", , )',
            'IIF([a] <> "b", Join(", ", [c], 1000), "\\"quoted\\"")',
            "BitAnd(&HF, &HF7)",
        ],
    )
    def test_unparse_round_trip(self, text: str) -> None:
        """unparse() gives text that parses to the same tree (offsets aside)."""
        again = parse(unparse(parse(text)))
        assert unparse(again) == unparse(parse(text))

    def test_walk_visits_every_node(self) -> None:
        """walk() lists parents before children."""
        names = [type(n).__name__ for n in walk(parse('IIF([a]="b", Left([c], 2), "d")'))]
        assert names == [
            "Function",
            "Comparison",
            "Attribute",
            "Constant",
            "Function",
            "Attribute",
            "Constant",
            "Constant",
        ]

    def test_function_names_are_case_sensitive(self) -> None:
        """'switch' is not 'Switch', but the hint finds it."""
        error = syntax_error('switch([a], "b", "c", "d")')
        assert error.hint == "unknown function 'switch' — did you mean 'Switch'?"


class TestErrors:
    def test_error_message_layout(self) -> None:
        """str() shows the hint with the column, the expression, and a caret under it."""
        error = syntax_error('Swich([a], "b", "c", "d")')
        assert str(error) == (
            "unknown function 'Swich' — did you mean 'Switch'? (at column 1)\n"
            '    Swich([a], "b", "c", "d")\n'
            "    ^"
        )

    def test_is_a_mapping_error(self) -> None:
        """ExpressionSyntaxError is a MappingError (so a ConfigError, exit code 2)."""
        error = syntax_error("Nope()")
        assert isinstance(error, MappingError)
        assert isinstance(error, ConfigError)
        assert error.exit_code == 2

    @pytest.mark.parametrize(
        ("text", "column", "hint"),
        [
            ('Append([a], "x)', 12, "unterminated string"),
            ('Append([a] "x")', 11, "expected ',' or ')' after an argument of Append"),
            ('Append([a], "x"', 15, "expected ',' or ')'"),
            ('Append([a, "x")', 7, "unterminated attribute reference"),
            ('Join("", [a]))', 13, "')' without a matching '('"),
            ('Left("abc", 2) "x"', 15, "unexpected a string after the end of the expression"),
            ("IIF([a] != 1, 2, 3)", 8, "'!=' is not an operator; use '<>'"),
            ('IIF([a] = 1 = 2, "x", "y")', 12, "comparisons cannot be chained"),
            ('Append([a], "x" @)', 16, "unexpected character '@'"),
            ("Append([a], [])", 12, "empty attribute name '[]'"),
        ],
    )
    def test_caret_positions(self, text: str, column: int, hint: str) -> None:
        """The caret sits under the offending character."""
        error = syntax_error(text)
        assert hint in error.hint
        assert error.position == column
        assert error.column == column + 1
        assert caret_column(error) == column
        assert str(error).splitlines()[-2] == f"    {text}"

    def test_unclosed_call_names_the_opening(self) -> None:
        """At the end of input, the hint says which '(' is never closed."""
        error = syntax_error('Join(",", Left([a], 1)')
        assert error.hint == "expected ',' or ')': the '(' of Join at column 5 is never closed"

    def test_multi_line_expression(self) -> None:
        """In a multi-line expression the message gives line and column of that line."""
        text = 'SelectUniqueValue(\n    Join("@", [a], "x"),\n    Jion("@", [b], "x")\n)'
        error = syntax_error(text)
        assert (error.line, error.column) == (3, 5)
        lines = str(error).splitlines()
        assert lines[0].endswith("(at line 3, column 5)")
        assert lines[1] == '        Jion("@", [b], "x")'
        assert lines[2] == "        ^"

    def test_long_line_is_windowed(self) -> None:
        """A long expression is cut around the error so the caret stays readable."""
        text = "Join(" + ", ".join(f'"{i:04d}"' for i in range(300)) + ", Bad())"
        error = syntax_error(text)
        excerpt, caret = str(error).splitlines()[1:]
        assert len(excerpt) < 140
        assert excerpt[caret.index("^") :].startswith("Bad()")
        assert "…" in excerpt

    def test_located_names_file_and_key(self) -> None:
        """located() prefixes the config file and key, keeping the caret."""
        error = syntax_error('Append([a], "x"').located(
            path="bulkprov.toml", key="mappings[3].expression"
        )
        assert str(error).startswith("bulkprov.toml: mappings[3].expression: expected ")
        assert error.key == "mappings[3].expression"
        assert str(error).endswith("^")
