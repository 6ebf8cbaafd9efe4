"""AST of the expression language, named after Graph's ``attributeMappingSource`` types.

Graph describes a parsed expression as a tree of ``Attribute``, ``Constant`` and
``Function`` nodes. Three more node kinds cover what Entra's examples use but Graph's
vocabulary does not name: an omitted argument (:class:`Empty`, as in
``Switch([IsSoftDeleted], , "False", …)``), a comparison inside ``IIF``/``CBool``
(:class:`Comparison`) and a bare VB name such as ``vbTextCompare`` (:class:`Identifier`).

Every node carries ``start``/``end`` offsets into the expression text for error carets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CompareOp = Literal["=", "<>", "<", "<=", ">", ">="]


@dataclass(frozen=True, slots=True)
class Attribute:
    """``[name]``: a source attribute (or a computed one such as ``IsSoftDeleted``)."""

    name: str
    start: int = 0
    end: int = 0


@dataclass(frozen=True, slots=True)
class Constant:
    """A string constant, or a bare number (Graph stores numbers as constant strings).

    ``numeric`` is true for ``12``, ``-3`` and VB hex literals (``&HF`` has value ``"15"``);
    ``raw`` is the text as written.
    """

    value: str
    start: int = 0
    end: int = 0
    numeric: bool = False
    raw: str = ""


@dataclass(frozen=True, slots=True)
class Empty:
    """An omitted argument: the slot between two commas (``Replace([x], , "re", , "", , )``)."""

    start: int = 0
    end: int = 0


@dataclass(frozen=True, slots=True)
class Identifier:
    """A bare name that is not a function call, e.g. ``vbBinaryCompare``."""

    name: str
    start: int = 0
    end: int = 0


@dataclass(frozen=True, slots=True)
class Comparison:
    """``left op right``, allowed only as the condition of ``IIF`` or inside ``CBool``."""

    op: CompareOp
    left: Node
    right: Node
    start: int = 0
    end: int = 0
    op_start: int = 0


@dataclass(frozen=True, slots=True)
class Function:
    """``Name(arg, …)``; ``args`` keeps :class:`Empty` slots in place."""

    name: str
    args: tuple[Node, ...] = ()
    start: int = 0
    end: int = 0


Node = Attribute | Constant | Empty | Identifier | Comparison | Function


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unparse(node: Node) -> str:
    """Render a node back to expression text (canonical spacing: ``F(a, b)``)."""
    if isinstance(node, Attribute):
        return f"[{node.name}]"
    if isinstance(node, Constant):
        if node.numeric:
            return node.raw or node.value
        return _quote(node.value)
    if isinstance(node, Empty):
        return ""
    if isinstance(node, Identifier):
        return node.name
    if isinstance(node, Comparison):
        return f"{unparse(node.left)} {node.op} {unparse(node.right)}"
    parts = [unparse(a) for a in node.args]
    return f"{node.name}({', '.join(parts)})"


def walk(node: Node) -> list[Node]:
    """Every node of the tree, parents before children."""
    out: list[Node] = []
    stack: list[Node] = [node]
    while stack:
        n = stack.pop()
        out.append(n)
        if isinstance(n, Function):
            stack.extend(reversed(n.args))
        elif isinstance(n, Comparison):
            stack.extend((n.right, n.left))
    return out
