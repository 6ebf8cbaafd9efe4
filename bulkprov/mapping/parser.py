"""Recursive-descent parser: expression text → AST (:mod:`bulkprov.mapping.ast`).

Grammar (no infix operators besides one comparison per argument, so no precedence)::

    expression := argument EOF
    argument   := primary ( ("=" | "<>" | "<" | "<=" | ">" | ">=") primary )?
    primary    := NAME "(" [ slot ( "," slot )* ] ")"     a function call
                | NAME                                     an identifier (vbTextCompare)
                | ATTR | STRING | NUMBER | HEX
    slot       := argument | <nothing>                     <nothing> becomes ast.Empty

``F()`` has no arguments; ``F(,)`` has two empty ones. Function names are checked here
(case-sensitively, with a did-you-mean hint); arity and argument kinds are checked by
the compiler, which knows each function's signature. Parsed trees are cached by text.

Calls nest at most :data:`MAX_NESTING` deep. The parser, the compiler and the evaluator
closures it builds each recurse once per level, so that bound is what keeps all three far
from Python's recursion limit: 330 nested calls fit in Entra's 10,000 characters and
used to end in ``RecursionError``. Microsoft documents no nesting limit [I: 100 levels is
far beyond what a hand-written mapping needs].
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from functools import lru_cache

from bulkprov.mapping import ast
from bulkprov.mapping.errors import ExpressionSyntaxError
from bulkprov.mapping.functions import REGISTRY
from bulkprov.mapping.lexer import Token, tokenize

_OPS: dict[str, ast.CompareOp] = {op: op for op in ("=", "<>", "<", "<=", ">", ">=")}

#: how deep function calls may nest (``F(G(H([x])))`` is 3 deep)
MAX_NESTING = 100


def suggest(name: str, known: Collection[str]) -> str | None:
    """The known name closest to ``name`` (case-insensitive matches first)."""
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        return close[0]
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


class _Parser:
    def __init__(self, text: str, known: Collection[str]) -> None:
        self.text = text
        self.known = known
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, hint: str, position: int) -> ExpressionSyntaxError:
        return ExpressionSyntaxError(hint, self.text, position)

    def parse(self) -> ast.Node:
        if self.tok.kind == "EOF":
            raise self.error("empty expression", 0)
        node = self.argument()
        tok = self.tok
        if tok.kind != "EOF":
            if tok.kind == "RPAREN":
                raise self.error("')' without a matching '('", tok.start)
            if tok.kind == "COMMA":
                raise self.error(
                    "',' outside a function call: an expression is one value", tok.start
                )
            raise self.error(
                f"unexpected {tok.describe()} after the end of the expression", tok.start
            )
        return node

    def argument(self) -> ast.Node:
        left = self.primary()
        tok = self.tok
        if tok.kind != "OP":
            return left
        self.i += 1
        right = self.primary()
        if self.tok.kind == "OP":
            raise self.error(
                "comparisons cannot be chained (no AND/OR either): nest IIF calls instead",
                self.tok.start,
            )
        return ast.Comparison(_OPS[tok.value], left, right, left.start, right.end, tok.start)

    def primary(self) -> ast.Node:
        tok = self.tok
        kind = tok.kind
        if kind == "NAME":
            self.i += 1
            if self.tok.kind == "LPAREN":
                return self.call(tok)
            return ast.Identifier(tok.value, tok.start, tok.end)
        if kind == "ATTR":
            self.i += 1
            return ast.Attribute(tok.value, tok.start, tok.end)
        if kind == "STRING":
            self.i += 1
            return ast.Constant(tok.value, tok.start, tok.end)
        if kind == "NUMBER":
            self.i += 1
            return ast.Constant(tok.value, tok.start, tok.end, numeric=True, raw=tok.value)
        if kind == "HEX":
            self.i += 1
            raw = self.text[tok.start : tok.end]
            return ast.Constant(tok.value, tok.start, tok.end, numeric=True, raw=raw)
        if kind == "EOF":
            raise self.error(
                'unexpected end of expression: expected a function, [attribute], "string" '
                "or number",
                tok.start,
            )
        if kind == "OP":
            raise self.error(
                f"unexpected {tok.value!r}: a comparison needs a value on its left", tok.start
            )
        raise self.error(
            f'expected a function, [attribute], "string" or number, found {tok.describe()}',
            tok.start,
        )

    def call(self, name: Token) -> ast.Function:
        if name.value not in self.known:
            guess = suggest(name.value, self.known)
            hint = f"unknown function {name.value!r}"
            if guess:
                hint += f" — did you mean {guess!r}?"
            raise self.error(hint, name.start)
        open_paren = self.tok
        if self.depth >= MAX_NESTING:
            raise self.error(
                f"function calls nested more than {MAX_NESTING} deep: simplify the expression",
                name.start,
            )
        self.i += 1
        args: list[ast.Node] = []
        if self.tok.kind == "RPAREN":
            end = self.tok.end
            self.i += 1
            return ast.Function(name.value, (), name.start, end)
        self.depth += 1
        while True:
            tok = self.tok
            if tok.kind in ("COMMA", "RPAREN"):
                args.append(ast.Empty(tok.start, tok.start))
            else:
                args.append(self.argument())
            tok = self.tok
            if tok.kind == "COMMA":
                self.i += 1
                continue
            if tok.kind == "RPAREN":
                self.i += 1
                self.depth -= 1
                return ast.Function(name.value, tuple(args), name.start, tok.end)
            if tok.kind == "EOF":
                raise self.error(
                    f"expected ',' or ')': the '(' of {name.value} at column "
                    f"{open_paren.start + 1} is never closed",
                    tok.start,
                )
            raise self.error(
                f"expected ',' or ')' after an argument of {name.value}, found {tok.describe()}",
                tok.start,
            )


@lru_cache(maxsize=1024)
def _parse_cached(text: str) -> ast.Node:
    return _Parser(text, REGISTRY.keys()).parse()


def parse(text: str, *, known_functions: Collection[str] | None = None) -> ast.Node:
    """Parse an expression into an AST.

    Args:
        text: the expression, at most 10,000 characters.
        known_functions: function names to accept (default: every registered function).

    Raises:
        ExpressionSyntaxError: with a caret under the offending column.
    """
    if known_functions is None:
        return _parse_cached(text)
    return _Parser(text, known_functions).parse()
