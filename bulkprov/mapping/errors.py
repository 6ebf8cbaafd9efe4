"""The one error of the expression language: a message with a caret under the bad column.

Both syntax problems (an unterminated string, an unknown function) and compile-time
semantic problems (a wrong number of arguments, an empty required argument) raise
:class:`ExpressionSyntaxError`, so that every problem found when a config loads points at
the exact place in the expression.
"""

from __future__ import annotations

from bulkprov.errors import MappingError

#: how many characters of a long line are shown either side of the caret
_SPAN = 60


def render_caret(expression: str, position: int) -> tuple[int, int, str]:
    """Return ``(line, column, excerpt)``: 1-based line/column and two lines of context.

    The excerpt is the line holding ``position`` (tabs shown as spaces, long lines cut
    to a window around the column) and a caret line under the offending character.
    """
    position = max(0, min(position, len(expression)))
    line_start = expression.rfind("\n", 0, position) + 1
    line_end = expression.find("\n", position)
    if line_end < 0:
        line_end = len(expression)
    line_no = expression.count("\n", 0, position) + 1
    column = position - line_start
    text = expression[line_start:line_end].replace("\t", " ").replace("\r", " ")
    if column > _SPAN:
        cut = column - _SPAN
        text = "…" + text[cut:]
        column = column - cut + 1
    if len(text) > column + _SPAN:
        text = text[: column + _SPAN] + "…"
    return line_no, position - line_start + 1, f"    {text}\n    {' ' * column}^"


class ExpressionSyntaxError(MappingError):
    """An attribute-mapping expression that cannot be compiled.

    Attributes:
        hint: what is wrong, e.g. ``unknown function 'Swich' — did you mean 'Switch'?``.
        expression: the whole expression text.
        position: 0-based offset of the offending character.
        line / column: 1-based location of ``position``.
    """

    def __init__(
        self,
        hint: str,
        expression: str,
        position: int,
        *,
        path: str | None = None,
        key: str | None = None,
    ) -> None:
        self.hint = hint
        self.expression = expression
        self.position = position
        self.line, self.column, self.excerpt = render_caret(expression, position)
        where = (
            f"line {self.line}, column {self.column}"
            if "\n" in expression
            else (f"column {self.column}")
        )
        super().__init__(f"{hint} (at {where})\n{self.excerpt}", path=path, key=key)

    def __reduce__(self) -> tuple[object, ...]:
        # The constructor's signature differs from Exception's: keep errors picklable.
        return (
            _rebuild,
            (self.hint, self.expression, self.position, self.path, self.key),
        )

    def located(self, *, path: str | None, key: str | None) -> ExpressionSyntaxError:
        """The same error, naming the config file and key it came from."""
        return ExpressionSyntaxError(self.hint, self.expression, self.position, path=path, key=key)


def _rebuild(
    hint: str, expression: str, position: int, path: str | None, key: str | None
) -> ExpressionSyntaxError:
    return ExpressionSyntaxError(hint, expression, position, path=path, key=key)
