"""``bulkprov mapping test|export|import``: try mappings on one user; move them in and out.

Export and import speak two shapes:

* JSON shaped like Graph's synchronization ``attributeMapping`` objects (facts.md §4.2,
  GRAPH ``resources/synchronization-attributemapping.md``): ``targetAttributeName``,
  ``source`` (an ``attributeMappingSource``: ``type`` Attribute / Constant / Function,
  ``name``, ``expression``), ``defaultValue``, ``flowType`` (``Always`` or
  ``ObjectAddOnly`` for "only during object creation") and ``matchingPriority`` (0 = not
  matching). A mapping whose ``source`` is null is type None. Function sources are read
  from ``expression`` (their ``parameters`` tree is not needed: the expression is the
  same mapping in Entra's own text form).
* TOML ``[[mappings]]`` tables, as in ``bulkprov.toml``.

Every imported table is validated and compiled before it is printed, so what comes out
loads.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from bulkprov.config import AttributeMapping
from bulkprov.errors import ConfigError
from bulkprov.mapping import MappingContext, compile_expression, compile_mappings
from bulkprov.mapping.compiler import REDACTED


def to_graph(mappings: list[AttributeMapping]) -> dict[str, Any]:
    """Mappings as Graph ``attributeMapping`` objects."""
    out = []
    for m in mappings:
        source: dict[str, Any] | None
        if m.type == "direct":
            assert m.source is not None
            source = {"type": "Attribute", "name": m.source, "expression": f"[{m.source}]"}
        elif m.type == "constant":
            assert m.constant is not None
            source = {"type": "Constant", "name": m.constant, "expression": json.dumps(m.constant)}
        elif m.type == "expression":
            assert m.expression is not None
            name = m.expression.split("(", 1)[0].strip()
            source = {"type": "Function", "name": name, "expression": m.expression}
        else:
            source = None
        if source is not None:
            source["parameters"] = []
        out.append(
            {
                "targetAttributeName": m.target,
                "source": source,
                "defaultValue": m.default,
                "flowType": "Always" if m.apply == "always" else "ObjectAddOnly",
                "flowBehavior": "FlowWhenChanged",
                "matchingPriority": m.matching_precedence or 0,
            }
        )
    return {"attributeMappings": out}


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def to_toml(mappings: list[AttributeMapping]) -> str:
    """Mappings as ``[[mappings]]`` tables."""
    blocks = []
    for m in mappings:
        lines = ["[[mappings]]", f"target = {_toml_str(m.target)}"]
        for key in ("source", "constant", "expression"):
            value = getattr(m, key)
            if value is not None:
                lines.append(f"{key} = {_toml_str(value)}")
        if m.type == "none":
            lines.append('type = "none"')
        if m.default is not None:
            lines.append(f"default = {_toml_str(m.default)}")
        if m.apply != "always":
            lines.append(f'apply = "{m.apply}"')
        if m.matching_precedence is not None:
            lines.append(f"matching_precedence = {m.matching_precedence}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def from_graph(doc: Any) -> list[AttributeMapping]:
    """Read Graph ``attributeMapping`` objects (a list, or ``{"attributeMappings": [...]}``)."""
    items = doc.get("attributeMappings") if isinstance(doc, Mapping) else doc
    if not isinstance(items, list):
        raise ConfigError("expected a list of attributeMapping objects or {attributeMappings}")
    out = []
    for i, item in enumerate(items):
        where = f"attributeMappings[{i}]"
        if not isinstance(item, Mapping) or "targetAttributeName" not in item:
            raise ConfigError("not an attributeMapping (no targetAttributeName)", key=where)
        row: dict[str, Any] = {"target": item["targetAttributeName"]}
        src = item.get("source")
        kind = src.get("type") if isinstance(src, Mapping) else None
        if src is None:
            row["type"] = "none"
        elif kind == "Attribute":
            row["source"] = src.get("name") or str(src.get("expression", "")).strip("[]")
        elif kind == "Constant":
            row["constant"] = src.get("name") if src.get("name") is not None else ""
        elif kind == "Function":
            if not src.get("expression"):
                raise ConfigError("a Function source needs its 'expression'", key=where)
            row["expression"] = src["expression"]
        else:
            raise ConfigError(f"unknown source type {kind!r}", key=f"{where}.source.type")
        if item.get("defaultValue") not in (None, ""):
            row["default"] = item["defaultValue"]
        if item.get("flowType", "Always") not in ("Always", None):
            row["apply"] = "creation"
        if item.get("matchingPriority"):
            row["matching_precedence"] = int(item["matchingPriority"])
        out.append(_validated(row, where))
    return out


def from_toml(text: str) -> list[AttributeMapping]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc
    rows = data.get("mappings")
    if not isinstance(rows, list):
        raise ConfigError("no [[mappings]] tables")
    return [_validated(r, f"mappings[{i}]") for i, r in enumerate(rows)]


def _validated(row: Any, where: str) -> AttributeMapping:
    try:
        return AttributeMapping.model_validate(row)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        # not the cause: pydantic's text quotes the input (a constant may hold anything)
        raise ConfigError(str(first["msg"]), key=where) from None


def check(mappings: list[AttributeMapping]) -> None:
    """Compile the table (raises MappingError naming the row)."""
    compile_mappings(mappings)


def evaluate_user(
    mappings: list[AttributeMapping], user: Mapping[str, Any], expression: str | None = None
) -> dict[str, Any]:
    """Run the table (or one expression) on a Graph user; redacted values stay hidden."""
    ctx = MappingContext(is_soft_deleted=user.get("accountEnabled") is False)
    if expression is not None:
        compiled = compile_expression(expression)
        value = compiled.evaluate(user, ctx)
        return {"expression": expression, "value": REDACTED if compiled.redacted else value}
    mapper = compile_mappings(mappings)
    mapped = mapper.map_user(user, ctx)
    return {
        "values": mapped.loggable_values(),
        "on_update": sorted(mapped.update_values),
        "matching": list(mapper.matching),
    }
