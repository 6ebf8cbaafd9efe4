"""③ Mapping: Entra's attribute-mapping expression language, compiled per config.

    Graph user ─▶ UserMapper.map_user(user, ctx) ─▶ MappedUser(values, update_values,
                                                              resource, body, digest)

``compile_mappings`` parses and checks every row once (syntax, function names, arity,
argument kinds) and fuses the table into one tuple of closures; ``compile_expression``
compiles a single expression (``bulkprov mapping test``). Modules, in pipeline order:
``lexer`` → ``parser`` (→ ``ast``) → ``compiler`` (with ``functions``, ``attributes``,
``values``, ``dates``, ``text``, ``regex``).
"""

from __future__ import annotations

from bulkprov.mapping.compiler import CompiledExpression as CompiledExpression
from bulkprov.mapping.compiler import MappedUser as MappedUser
from bulkprov.mapping.compiler import UserMapper as UserMapper
from bulkprov.mapping.compiler import compile_expression as compile_expression
from bulkprov.mapping.compiler import compile_mappings as compile_mappings
from bulkprov.mapping.context import MappingContext as MappingContext
from bulkprov.mapping.defaults import DEFAULT_ZOOM_MAPPINGS as DEFAULT_ZOOM_MAPPINGS
from bulkprov.mapping.errors import ExpressionSyntaxError as ExpressionSyntaxError
from bulkprov.mapping.functions import REGISTRY as FUNCTIONS
from bulkprov.mapping.parser import parse as parse

__all__ = [
    "DEFAULT_ZOOM_MAPPINGS",
    "FUNCTIONS",
    "CompiledExpression",
    "ExpressionSyntaxError",
    "MappedUser",
    "MappingContext",
    "UserMapper",
    "compile_expression",
    "compile_mappings",
    "parse",
]
