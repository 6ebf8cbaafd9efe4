"""``bulkprov mapping export|import``: the mapping table and scoping filters in Entra's JSON.

Import reads what Entra gives you, in Graph's synchronization shapes (GRAPH
``resources/synchronization-*.md``; facts.md §3.1, §4.2):

* a ``synchronizationSchema`` (``GET /servicePrincipals/{id}/synchronization/jobs/{jobId}/
  schema``, or the file the portal's "Review your schema" downloads): the user
  ``objectMapping`` is picked from ``synchronizationRules[].objectMappings[]``, the group
  one too, and the others are listed, not imported;
* one ``objectMapping`` (``attributeMappings``, ``scope``, ``name``, ``enabled`` …);
* ``{"attributeMappings": [...]}`` or a bare list of ``attributeMapping`` objects.

An ``attributeMapping`` becomes a ``[[mappings]]`` row: ``targetAttributeName``;
``source`` (an ``attributeMappingSource``: ``type`` Attribute, the default, with ``name``;
Constant, whose ``name`` is the value; Function, read from ``expression``: its
``parameters`` tree is the same mapping) or null for type None; ``defaultValue``;
``flowType`` (``Always``, the default; ``ObjectAddOnly`` is "only during object creation";
``MultiValueAddOnly``, ``ValueAddOnly`` and ``AttributeAddOnly`` are refused, naming the
attribute: bulkprov applies a mapping always or on creation only); ``flowBehavior``
(``FlowWhenChanged``, the default and what bulkprov does; ``FlowAlways`` is imported with a
warning); ``matchingPriority`` (0: not matching).

The ``scope`` (a ``filter``) becomes ``[[scope.filters]]``: each ``filterGroup`` a filter,
each ``filterClause`` (``sourceOperandName``, ``operatorName``, ``targetOperand.values``)
a clause. Graph has three sets of groups and an object is in scope when each non-empty set
has a group that holds; bulkprov has one set (filters OR, clauses AND), so two sets are
multiplied out (A or B, and C → A and C, or B and C). ``groups`` "should be used in most
cases" and deprovisions an object that stops matching, as bulkprov's filters do;
``inputFilterGroups`` does not deprovision (imported with a warning: bulkprov disables such
a user); ``categoryFilterGroups`` decides whether the object belongs to the mapping.
Operator names are the portal's (SCOPING's list: ``NOT EQUALS``, ``REGEX MATCH``, …) or
with underscores (``NOT_EQUALS``); Microsoft's JSON example shows only ``EQUALS``, so both
spellings are read and the portal's is written.

Export writes the same shapes: an ``objectMapping`` (the default), or a whole
``synchronizationSchema`` whose rule holds the user mapping and the group mapping
(``enabled`` as ``[groups] enabled`` is). Import → export → import gives the same table.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import ValidationError

from bulkprov.config import (
    DEFAULT_REGEX_TIMEOUT,
    AttributeMapping,
    ScopingFilter,
    ScopingOperator,
)
from bulkprov.errors import ConfigError
from bulkprov.mapping import ast
from bulkprov.mapping.compiler import REDACTED, compile_expression, compile_mappings
from bulkprov.mapping.context import MappingContext
from bulkprov.mapping.errors import ExpressionSyntaxError
from bulkprov.mapping.lexer import tokenize
from bulkprov.mapping.parser import parse

#: the names Entra gives the object mappings of a custom SCIM app
USER_MAPPING_NAME = "Provision Microsoft Entra ID Users"
GROUP_MAPPING_NAME = "Provision Microsoft Entra ID Groups"

#: what bulkprov sends for a group (bulkprov.scim.groups), as Entra's default group mapping
#: writes it: target attribute → Graph source attribute
GROUP_ATTRIBUTES = {"displayName": "displayName", "externalId": "objectId", "members": "members"}

#: the 14 operators (SCOPING), by the key :func:`_operator_key` makes of a spelling
_OPERATORS = {
    key: name for name in get_args(ScopingOperator) for key in [name.upper().replace("_", " ")]
}
_UNARY = frozenset({"IS TRUE", "IS FALSE", "IS NULL", "IS NOT NULL"})

#: Graph's attributeFlowType values bulkprov cannot honour, and what they mean (GRAPH
#: synchronization-attributemapping.md)
_FLOW_TYPES_REFUSED = {
    "multivalueaddonly": (
        "MultiValueAddOnly",
        "only when the change adds values to a multi-valued attribute",
    ),
    "valueaddonly": ("ValueAddOnly", "only 'Add' operations, never 'Remove'"),
    "attributeaddonly": ("AttributeAddOnly", "only when the target has no value at all"),
}

#: the most scoping filters multiplying Graph's group sets out may give
MAX_FILTERS = 100


@dataclass(frozen=True)
class Imported:
    """What an import read.

    Attributes:
        mappings: the ``[[mappings]]`` rows.
        filters: the ``[[scope.filters]]``.
        groups: whether the document provisions groups (``[groups] enabled``), or None
            when it does not say.
        notes: what was taken and what was left, for the person importing.
        warnings: what bulkprov will do differently from Entra, by attribute or filter.
        deletes: whether the user mapping's ``flowTypes`` has ``Delete`` (Entra's "Delete"
            target object action), or None when it does not say.
    """

    mappings: list[AttributeMapping]
    filters: list[ScopingFilter] = field(default_factory=list)
    groups: bool | None = None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    deletes: bool | None = None

    def same_table(self, other: Imported) -> bool:
        """The same mappings, filters and groups decision (notes aside)."""
        return (self.mappings, self.filters, self.groups) == (
            other.mappings,
            other.filters,
            other.groups,
        )


# --- export -------------------------------------------------------------------------------


def _quote(value: str) -> str:
    """A string constant as Entra writes it (only \\" and \\\\ are escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _source(m: AttributeMapping) -> dict[str, Any] | None:
    if m.type == "direct":
        assert m.source is not None
        name = m.source.strip()
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1].strip()
        return {"expression": f"[{name}]", "name": name, "parameters": [], "type": "Attribute"}
    if m.type == "constant":
        assert m.constant is not None
        return {
            "expression": _quote(m.constant),
            "name": m.constant,
            "parameters": [],
            "type": "Constant",
        }
    if m.type == "expression":
        assert m.expression is not None
        try:
            root = parse(m.expression)
        except ExpressionSyntaxError:
            root = None
        name = root.name if isinstance(root, ast.Function) else ""
        return {"expression": m.expression, "name": name, "parameters": [], "type": "Function"}
    return None


def attribute_mappings(mappings: Iterable[AttributeMapping]) -> list[dict[str, Any]]:
    """Rows as Graph ``attributeMapping`` objects."""
    return [
        {
            "defaultValue": m.default,
            "exportMissingReferences": False,
            "flowBehavior": "FlowWhenChanged",
            "flowType": "Always" if m.apply == "always" else "ObjectAddOnly",
            "matchingPriority": m.matching_precedence or 0,
            "source": _source(m),
            "targetAttributeName": m.target,
        }
        for m in mappings
    ]


def _scope(filters: Sequence[ScopingFilter]) -> dict[str, Any] | None:
    if not filters:
        return None
    groups = [
        {
            "clauses": [
                {
                    "operatorName": c.operator,
                    "sourceOperandName": c.attribute,
                    "targetOperand": {"values": [] if c.value is None else [c.value]},
                }
                for c in f.clauses
            ],
            "name": f.name,
        }
        for f in filters
    ]
    return {"categoryFilterGroups": [], "groups": groups, "inputFilterGroups": []}


def to_object_mapping(
    mappings: Sequence[AttributeMapping], filters: Sequence[ScopingFilter] = ()
) -> dict[str, Any]:
    """The user ``objectMapping``: the table and the scoping filters."""
    return {
        "attributeMappings": attribute_mappings(mappings),
        "enabled": True,
        "flowTypes": "Add, Update, Delete",
        "metadata": [],
        "name": USER_MAPPING_NAME,
        "scope": _scope(filters),
        "sourceObjectName": "User",
        "targetObjectName": "User",
    }


def _group_mapping(enabled: bool) -> dict[str, Any]:
    rows = [
        AttributeMapping(target=target, source=source)
        for target, source in GROUP_ATTRIBUTES.items()
    ]
    rows[0] = AttributeMapping(target="displayName", source="displayName", matching_precedence=1)
    return {
        "attributeMappings": attribute_mappings(rows),
        "enabled": enabled,
        "flowTypes": "Add, Update, Delete",
        "metadata": [],
        "name": GROUP_MAPPING_NAME,
        "scope": None,
        "sourceObjectName": "Group",
        "targetObjectName": "Group",
    }


def to_schema(
    mappings: Sequence[AttributeMapping],
    filters: Sequence[ScopingFilter] = (),
    *,
    groups: bool = True,
) -> dict[str, Any]:
    """A ``synchronizationSchema`` holding the user mapping and the group mapping.

    ``directories`` (the attribute definitions of both sides) are not included: bulkprov
    does not know them, and import does not need them.
    """
    return {
        "directories": [],
        "synchronizationRules": [
            {
                "editable": True,
                "name": "bulkprov",
                "objectMappings": [to_object_mapping(mappings, filters), _group_mapping(groups)],
                "sourceDirectoryName": "Azure Active Directory",
                "targetDirectoryName": "SCIM",
            }
        ],
    }


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def to_toml(mappings: Sequence[AttributeMapping], filters: Sequence[ScopingFilter] = ()) -> str:
    """``[[mappings]]`` tables, then ``[[scope.filters]]`` tables."""
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
    for f in filters:
        lines = ["[[scope.filters]]"]
        if f.name is not None:
            lines.append(f"name = {_toml_str(f.name)}")
        lines.append("clauses = [")
        for c in f.clauses:
            value = "" if c.value is None else f", value = {_toml_str(c.value)}"
            lines.append(
                f"    {{ attribute = {_toml_str(c.attribute)}, "
                f"operator = {_toml_str(c.operator)}{value} }},"
            )
        lines.append("]")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# --- import -------------------------------------------------------------------------------


class _Reader:
    """Reads one document, collecting notes and warnings; errors are ConfigErrors."""

    def __init__(self, *, collect: bool = False) -> None:
        self.notes: list[str] = []
        self.warnings: list[str] = []
        #: with ``collect``: every attributeMapping that cannot be imported or compiled,
        #: instead of stopping at the first (``from_graph(all_errors=True)``)
        self.collect = collect
        self.errors: list[ConfigError] = []

    def fail(self, message: str, key: str) -> ConfigError:
        return ConfigError(message, key=key)

    # attributeMapping → AttributeMapping

    def mapping(self, item: Any, where: str) -> AttributeMapping:
        if not isinstance(item, Mapping):
            raise self.fail("not an attributeMapping object", where)
        target = item.get("targetAttributeName")
        if not isinstance(target, str) or not target.strip():
            raise self.fail("an attributeMapping needs a targetAttributeName", where)
        where = f"{where} ({target})"
        if target.strip().lower() == "username" and target.strip() != "userName":
            # SCIM attribute names are case-insensitive (RFC 7643 §2.1); bulkprov's config
            # names the user key exactly "userName".
            self.notes.append(f"{target!r} imported as 'userName' (SCIM names ignore case)")
            target = "userName"
        row: dict[str, Any] = {"target": target}
        self.source(item.get("source"), row, where)
        default = item.get("defaultValue")
        if default is not None and not isinstance(default, str):
            raise self.fail(f"defaultValue must be a string, got {default!r}", where)
        if default:
            row["default"] = default
        row["apply"] = self.flow_type(item.get("flowType"), where)
        self.flow_behavior(item.get("flowBehavior"), where)
        priority = self.matching_priority(item.get("matchingPriority"), where)
        if priority:
            row["matching_precedence"] = priority
        return _validated(row, where)

    def source(self, src: Any, row: dict[str, Any], where: str) -> None:
        if src is None:
            row["type"] = "none"
            return
        if not isinstance(src, Mapping):
            raise self.fail("source must be an attributeMappingSource object or null", where)
        kind = src.get("type") or "Attribute"  # Graph: "Default is Attribute"
        name = src.get("name")
        expression = src.get("expression")
        if name is not None and not isinstance(name, str):
            raise self.fail(f"source.name must be a string, got {name!r}", where)
        if expression is not None and not isinstance(expression, str):
            raise self.fail(f"source.expression must be a string, got {expression!r}", where)
        if kind == "Attribute":
            attribute = name or (expression or "").strip().removeprefix("[").removesuffix("]")
            if not attribute.strip():
                raise self.fail("an Attribute source needs its 'name'", where)
            row["source"] = attribute.strip()
        elif kind == "Constant":
            row["constant"] = name if name is not None else self.constant(expression, where)
        elif kind == "Function":
            if not expression:
                raise self.fail(
                    "a Function source needs its 'expression' (the parameters tree alone is "
                    "not read)",
                    where,
                )
            row["expression"] = expression
        else:
            raise self.fail(
                f"unknown source type {kind!r} (Attribute, Constant or Function)", where
            )

    def constant(self, expression: str | None, where: str) -> str:
        """A Constant source without a ``name``: its value from ``expression``."""
        if expression is None:
            raise self.fail("a Constant source needs its 'name' (the value)", where)
        try:
            tokens = tokenize(expression)
        except ExpressionSyntaxError as exc:
            raise self.fail(f"Constant source: {exc.hint}", where) from None
        if len(tokens) == 2 and tokens[0].kind in ("STRING", "NUMBER"):
            return tokens[0].value
        raise self.fail(
            f"a Constant source's expression must be a string or a number, not {expression!r}",
            where,
        )

    def flow_type(self, value: Any, where: str) -> str:
        if value is None or (isinstance(value, str) and value.lower() == "always"):
            return "always"
        if isinstance(value, str) and value.lower() == "objectaddonly":
            return "creation"
        if isinstance(value, str) and value.lower() in _FLOW_TYPES_REFUSED:
            name, meaning = _FLOW_TYPES_REFUSED[value.lower()]
            raise self.fail(
                f"flowType {name} ({meaning}) cannot be honoured: bulkprov applies a mapping "
                "always (flowType Always) or only on creation (ObjectAddOnly); change it in "
                "the JSON to the one you want",
                where,
            )
        raise self.fail(
            f"unknown flowType {value!r} (Always, ObjectAddOnly, MultiValueAddOnly, "
            "ValueAddOnly or AttributeAddOnly)",
            where,
        )

    def flow_behavior(self, value: Any, where: str) -> None:
        if value is None or (isinstance(value, str) and value.lower() == "flowwhenchanged"):
            return
        if isinstance(value, str) and value.lower() == "flowalways":
            self.warnings.append(
                f"{where}: flowBehavior FlowAlways: bulkprov sends a value only when it "
                "changed (FlowWhenChanged)"
            )
            return
        raise self.fail(f"unknown flowBehavior {value!r} (FlowWhenChanged or FlowAlways)", where)

    def matching_priority(self, value: Any, where: str) -> int:
        if value is None:
            return 0
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
            return value
        raise self.fail(
            f"matchingPriority must be a whole number from 0 (not matching) to 2147483647, "
            f"got {value!r}",
            where,
        )

    def mappings(self, items: Any, where: str) -> list[AttributeMapping]:
        if not isinstance(items, list):
            raise self.fail("attributeMappings must be a list", where)
        if not self.collect:
            return [self.mapping(item, f"{where}[{i}]") for i, item in enumerate(items)]
        rows = []
        for i, item in enumerate(items):
            try:
                rows.append(self.compiled(self.mapping(item, f"{where}[{i}]"), f"{where}[{i}]"))
            except ConfigError as exc:
                self.errors.append(exc)
        return rows

    def compiled(self, row: AttributeMapping, where: str) -> AttributeMapping:
        """``row``, once it compiles alone as a run would compile it (its target path, its
        source name, its expression): an error names the attributeMapping, not ``mappings[0]``."""
        try:
            compile_mappings([row])
        except ConfigError as exc:
            text = str(exc).removeprefix(f"{exc.key}: ") if exc.key else str(exc)
            raise self.fail(text, f"{where} ({row.target})") from None
        return row

    # scope (a Graph filter) → ScopingFilters

    def filters(self, scope: Any, where: str) -> list[ScopingFilter]:
        if scope is None:
            return []
        if not isinstance(scope, Mapping):
            raise self.fail("scope must be a filter object or null", where)
        sets: list[list[ScopingFilter]] = []
        for key in ("groups", "inputFilterGroups", "categoryFilterGroups"):
            groups = scope.get(key)
            if groups is None:
                continue
            if not isinstance(groups, list):
                raise self.fail(f"{key} must be a list of filterGroup objects", f"{where}.{key}")
            read = [self.group(g, f"{where}.{key}[{i}]") for i, g in enumerate(groups)]
            if not read:
                continue
            if key == "inputFilterGroups":
                self.warnings.append(
                    f"{where}.inputFilterGroups: Entra does not deprovision a user who stops "
                    "matching these filters; bulkprov's scoping filters do (the account is "
                    "disabled, within deprovision.threshold)"
                )
            sets.append(read)
        if len(sets) <= 1:
            return sets[0] if sets else []
        count = 1
        for s in sets:
            count *= len(s)
        if count > MAX_FILTERS:
            raise self.fail(
                f"the scope's filter group sets multiply out to {count:,} filters (at most "
                f"{MAX_FILTERS}): simplify them",
                where,
            )
        combined = []
        for parts in itertools.product(*sets):
            names = [p.name for p in parts if p.name]
            combined.append(
                ScopingFilter(
                    name=" + ".join(names) if names else None,
                    clauses=[c for p in parts for c in p.clauses],
                )
            )
        self.notes.append(
            f"{where}: {len(sets)} sets of filter groups, each of which must hold, "
            f"written as {len(combined)} filters"
        )
        return combined

    def group(self, group: Any, where: str) -> ScopingFilter:
        if not isinstance(group, Mapping):
            raise self.fail("not a filterGroup object", where)
        clauses = group.get("clauses")
        if not isinstance(clauses, list) or not clauses:
            raise self.fail("a filterGroup needs at least one clause", where)
        name = group.get("name")
        if name is not None and not isinstance(name, str):
            raise self.fail(f"a filterGroup's name must be a string, got {name!r}", where)
        data = {
            "name": name or None,
            "clauses": [self.clause(c, f"{where}.clauses[{i}]") for i, c in enumerate(clauses)],
        }
        try:
            return ScopingFilter.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            raise self.fail(str(first["msg"]), where) from None

    def clause(self, clause: Any, where: str) -> dict[str, Any]:
        if not isinstance(clause, Mapping):
            raise self.fail("not a filterClause object", where)
        attribute = clause.get("sourceOperandName")
        if not isinstance(attribute, str) or not attribute.strip():
            raise self.fail("a filterClause needs its sourceOperandName", where)
        spelled = clause.get("operatorName")
        operator = _OPERATORS.get(_operator_key(spelled)) if isinstance(spelled, str) else None
        if operator is None:
            raise self.fail(
                f"unknown operatorName {spelled!r}; the operators are "
                f"{', '.join(_OPERATORS.values())}",
                where,
            )
        operand = clause.get("targetOperand")
        values = operand.get("values") if isinstance(operand, Mapping) else operand
        if values is None:
            values = []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise self.fail("targetOperand.values must be a list of strings", where)
        if operator in _UNARY:
            if any(values):
                raise self.fail(f"{operator} takes no value, got {values!r}", where)
            return {"attribute": attribute.strip(), "operator": operator}
        if len(values) != 1:
            raise self.fail(
                f"{operator} needs exactly one value in targetOperand.values, got "
                f"{len(values)}: a bulkprov clause compares with one value",
                where,
            )
        return {"attribute": attribute.strip(), "operator": operator, "value": values[0]}

    # objectMapping

    def object_mapping(self, om: Mapping[str, Any], where: str) -> Imported:
        mappings = self.mappings(om.get("attributeMappings"), f"{where}.attributeMappings")
        filters = self.filters(om.get("scope"), f"{where}.scope")
        flow_types = om.get("flowTypes")
        deletes = None
        if isinstance(flow_types, str) and flow_types.strip():
            given = {t.strip().lower() for t in flow_types.split(",")}
            deletes = "delete" in given
            missing = [t for t in ("Add", "Update", "Delete") if t.lower() not in given]
            if missing:
                self.warnings.append(
                    f"{where}: flowTypes {flow_types!r} leaves out {', '.join(missing)}: "
                    "bulkprov creates, updates and deprovisions (see deprovision.* in the "
                    "config)"
                )
        return Imported(mappings, filters, deletes=deletes)


def _operator_key(spelled: str) -> str:
    return " ".join(spelled.strip().upper().replace("_", " ").split())


def _describe(om: Mapping[str, Any], rule: str | None) -> str:
    name = om.get("name")
    text = repr(name) if isinstance(name, str) else "(unnamed)"
    arrow = f"{om.get('sourceObjectName')} → {om.get('targetObjectName')}"
    state = "" if om.get("enabled", True) is not False else ", disabled"
    return f"{text} ({arrow}{state}" + (f", rule {rule!r})" if rule else ")")


def _object_kind(om: Mapping[str, Any]) -> str:
    return str(om.get("sourceObjectName") or "").strip().lower()


def from_graph(
    doc: Any,
    *,
    object_mapping: str | None = None,
    groups: bool | None = None,
    all_errors: bool = False,
) -> Imported:
    """Read a synchronizationSchema, an objectMapping, or attributeMapping objects.

    Args:
        doc: the parsed JSON.
        object_mapping: the name of the user objectMapping to take from a schema (default:
            the first enabled one whose source object is User).
        groups: take the schema's group mapping (True), leave it (False), or follow its
            ``enabled`` (None).
        all_errors: read every attributeMapping, and compile each, before failing: the
            error then names every one that bulkprov cannot express (``bulkprov migrate``),
            not only the first.

    Raises:
        ConfigError: naming the JSON location (``attributeMappings[3] (mail)``).
    """
    reader = _Reader(collect=all_errors)
    imported = _from_graph(doc, reader, object_mapping, groups)
    if reader.errors:
        if len(reader.errors) == 1:
            raise reader.errors[0]
        raise ConfigError(
            f"{len(reader.errors)} attribute mappings cannot be expressed in bulkprov:\n"
            + "\n".join(f"  {exc}" for exc in reader.errors)
        )
    return imported


def _from_graph(
    doc: Any, reader: _Reader, object_mapping: str | None, groups: bool | None
) -> Imported:
    if isinstance(doc, list):
        return Imported(reader.mappings(doc, "attributeMappings"))
    if not isinstance(doc, Mapping):
        raise ConfigError(
            "expected a synchronizationSchema, an objectMapping, or attributeMapping objects"
        )
    if "synchronizationRules" in doc or "objectMappings" in doc:
        return _from_schema(doc, reader, object_mapping, groups)
    if "attributeMappings" not in doc:
        raise ConfigError(
            "expected a synchronizationSchema (synchronizationRules), an objectMapping or "
            "{attributeMappings}"
        )
    imported = reader.object_mapping(doc, "objectMapping")
    return Imported(
        imported.mappings,
        imported.filters,
        notes=tuple(reader.notes),
        warnings=tuple(reader.warnings),
        deletes=imported.deletes,
    )


def _from_schema(
    doc: Mapping[str, Any], reader: _Reader, wanted: str | None, groups: bool | None
) -> Imported:
    rules = doc.get("synchronizationRules")
    if rules is None:
        rules = [doc]  # one synchronizationRule on its own
    if not isinstance(rules, list):
        raise ConfigError("synchronizationRules must be a list", key="synchronizationRules")
    found: list[tuple[str, str | None, Mapping[str, Any]]] = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            raise ConfigError("not a synchronizationRule", key=f"synchronizationRules[{i}]")
        oms = rule.get("objectMappings") or []
        if not isinstance(oms, list):
            raise ConfigError(
                "objectMappings must be a list", key=f"synchronizationRules[{i}].objectMappings"
            )
        rule_name = rule.get("name") if isinstance(rule.get("name"), str) else None
        for j, om in enumerate(oms):
            where = f"synchronizationRules[{i}].objectMappings[{j}]"
            if not isinstance(om, Mapping):
                raise ConfigError("not an objectMapping", key=where)
            found.append((where, rule_name, om))
    if not found:
        raise ConfigError("the schema has no objectMappings", key="synchronizationRules")
    listing = "; ".join(_describe(om, rule) for _, rule, om in found)
    if wanted is not None:
        chosen = [f for f in found if f[2].get("name") == wanted] or [
            f for f in found if str(f[2].get("name", "")).lower() == wanted.lower()
        ]
        if not chosen:
            raise ConfigError(f"no objectMapping is named {wanted!r}; the schema has: {listing}")
        if _object_kind(chosen[0][2]) != "user":
            raise ConfigError(
                f"objectMapping {wanted!r} maps {chosen[0][2].get('sourceObjectName')!r} "
                "objects, not users"
            )
    else:
        users = [f for f in found if _object_kind(f[2]) == "user"]
        chosen = [f for f in users if f[2].get("enabled", True) is not False]
        if not chosen:
            problem = "only disabled ones" if users else "none"
            raise ConfigError(
                f"the schema has no enabled objectMapping of User objects ({problem}); "
                f"it has: {listing}"
            )
    where, rule, user_om = chosen[0]
    if user_om.get("enabled", True) is False:
        reader.warnings.append(
            f"{where}: the user mapping is disabled in the schema (Entra provisions no users "
            "with it); bulkprov will"
        )
    taken = reader.object_mapping(user_om, where)
    reader.notes.insert(
        0,
        f"user mapping: {_describe(user_om, rule)}: {len(taken.mappings)} attribute "
        f"mappings, {len(taken.filters) or 'no'} scoping filter"
        f"{'' if len(taken.filters) == 1 else 's'}",
    )
    group_oms = [f for f in found if _object_kind(f[2]) == "group" and f is not chosen[0]]
    groups_on: bool | None = None
    group_taken = None
    if groups is not False and group_oms:
        enabled = [f for f in group_oms if f[2].get("enabled", True) is not False]
        if groups is None and not enabled:
            groups_on = False
            group_taken = group_oms[0]
            reader.notes.append(
                f"groups: the group mapping {_describe(group_taken[2], group_taken[1])} is "
                "disabled: set [groups] enabled = false"
            )
        else:
            group_taken = (enabled or group_oms)[0]
            groups_on = True
            _check_group_mapping(reader, group_taken[2], group_taken[0])
            reader.notes.append(
                f"groups: the group mapping {_describe(group_taken[2], group_taken[1])} is "
                "taken: keep [groups] enabled = true"
            )
    elif groups is False:
        groups_on = False
        reader.notes.append("groups: left out (--no-groups): set [groups] enabled = false")
    others = [f for f in found if f is not chosen[0] and f is not group_taken]
    if others:
        reader.notes.append(
            "not imported: " + "; ".join(_describe(om, rule) for _, rule, om in others)
        )
    return Imported(
        taken.mappings,
        taken.filters,
        groups_on,
        notes=tuple(reader.notes),
        warnings=tuple(reader.warnings),
        deletes=taken.deletes,
    )


def _check_group_mapping(reader: _Reader, om: Mapping[str, Any], where: str) -> None:
    """Warn about every group row bulkprov does not send as the mapping says; refuse
    group scoping filters (bulkprov would provision groups that Entra leaves out)."""
    if reader.filters(om.get("scope"), f"{where}.scope"):
        raise ConfigError(
            "the group mapping has scoping filters, which bulkprov cannot apply to groups "
            "(it would provision groups that Entra leaves out); import with --no-groups, or "
            "remove them from the JSON",
            key=f"{where}.scope",
        )
    rows = om.get("attributeMappings") or []
    if not isinstance(rows, list):
        raise ConfigError("attributeMappings must be a list", key=f"{where}.attributeMappings")
    for item in rows:
        if not isinstance(item, Mapping):
            continue
        target = item.get("targetAttributeName")
        src = item.get("source")
        source = src.get("name") if isinstance(src, Mapping) else None
        kind = (src.get("type") or "Attribute") if isinstance(src, Mapping) else None
        if kind == "Attribute" and GROUP_ATTRIBUTES.get(str(target)) == source:
            continue
        if isinstance(src, Mapping):
            shown = src.get("expression") or source or "?"
        else:
            shown = "nothing"
        reader.warnings.append(
            f"{where}: group attribute {target} ← {shown} is not applied: bulkprov sends "
            "groups' displayName, externalId (objectId) and members only"
        )


def _validated(row: Any, where: str) -> AttributeMapping:
    try:
        return AttributeMapping.model_validate(row)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        # not the cause: pydantic's text quotes the input (a constant may hold anything)
        raise ConfigError(str(first["msg"]), key=where) from None


def from_toml(text: str) -> Imported:
    """Read ``[[mappings]]`` tables (and ``[[scope.filters]]``, ``[groups] enabled``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc
    rows = data.get("mappings")
    if not isinstance(rows, list):
        raise ConfigError("no [[mappings]] tables")
    mappings = [_validated(r, f"mappings[{i}]") for i, r in enumerate(rows)]
    scope = data.get("scope") or {}
    filters: list[ScopingFilter] = []
    for i, f in enumerate(scope.get("filters") or [] if isinstance(scope, dict) else []):
        try:
            filters.append(ScopingFilter.model_validate(f))
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            raise ConfigError(str(first["msg"]), key=f"scope.filters[{i}]") from None
    groups = data.get("groups")
    enabled = groups.get("enabled") if isinstance(groups, dict) else None
    return Imported(mappings, filters, enabled if isinstance(enabled, bool) else None)


def evaluate_user(
    mappings: list[AttributeMapping],
    user: Mapping[str, Any],
    expression: str | None = None,
    *,
    regex_timeout: float = DEFAULT_REGEX_TIMEOUT,
) -> dict[str, Any]:
    """Run the table (or one expression) on a Graph user; redacted values stay hidden."""
    ctx = MappingContext(is_soft_deleted=user.get("accountEnabled") is False)
    if expression is not None:
        compiled = compile_expression(expression, regex_timeout=regex_timeout)
        value = compiled.evaluate(user, ctx)
        return {"expression": expression, "value": REDACTED if compiled.redacted else value}
    mapper = compile_mappings(mappings, regex_timeout=regex_timeout)
    mapped = mapper.map_user(user, ctx)
    return {
        "values": mapped.loggable_values(),
        "on_update": sorted(mapped.update_values),
        "matching": list(mapper.matching),
    }
