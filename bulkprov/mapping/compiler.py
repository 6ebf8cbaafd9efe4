"""Mapping compilation: expressions → closures, and a mapping table → one fast ``map_user``.

Everything that can be checked is checked here, once, when the config loads: syntax,
function names, arity, empty required arguments, comparisons outside ``IIF``/``CBool``,
constant arguments of the wrong kind (a non-integer index, an invalid regex or date
format), and the rules of the table (one mapping per target, matching precedences,
``SelectUniqueValue`` only on create-only, non-matching targets). Calls whose arguments
are all constants are evaluated now ("folded").

What remains per user is a tuple of closures run in mapping order
(:meth:`UserMapper.map_user`): a Direct mapping is one dict lookup.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bulkprov.config import AttributeMapping
from bulkprov.errors import MappingError, UserDataError
from bulkprov.mapping import ast
from bulkprov.mapping.attributes import is_valid_name, reader, select_names
from bulkprov.mapping.context import DEFAULT_CONTEXT, MappingContext
from bulkprov.mapping.errors import ExpressionSyntaxError
from bulkprov.mapping.functions import (
    REGISTRY,
    Arg,
    Call,
    Evaluator,
    compare,
    constant_evaluator,
    null_evaluator,
)
from bulkprov.mapping.parser import parse, suggest
from bulkprov.mapping.regex import DEFAULT_REGEX_TIMEOUT
from bulkprov.mapping.values import bool_text
from bulkprov.scim.paths import CORE_USER, ENTERPRISE_USER, ScimPath, parse_path, set_value

#: Graph properties every run reads, whatever the mappings say
ALWAYS_SELECTED = frozenset({"id", "userPrincipalName", "accountEnabled"})

#: what a redacted value looks like in logs (FUNCS, Redact)
REDACTED = "[Redact]"

_EMPTY_USER: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """One compiled expression.

    Attributes:
        text: the expression as written.
        ast: its syntax tree.
        evaluator: ``evaluator(user, ctx)`` → value.
        attributes: the attribute names it references, as written (``[objectId]``).
        source_attributes: the Graph properties to ``$select`` for it.
        functions: the function names it calls.
        redacted: it calls ``Redact``: logs must show ``[Redact]`` instead of the value.
        constant: it does not depend on the user (then ``value`` is its value).
    """

    text: str
    ast: ast.Node
    evaluator: Evaluator
    attributes: frozenset[str]
    source_attributes: frozenset[str]
    functions: frozenset[str]
    redacted: bool
    constant: bool
    value: Any = None

    def evaluate(self, user: Mapping[str, Any], ctx: MappingContext | None = None) -> Any:
        """Evaluate for one Graph user (null is ``None``).

        Raises:
            UserDataError: the user's data cannot go through the expression.
        """
        return self.evaluator(user, ctx or DEFAULT_CONTEXT)


class _Compiler:
    def __init__(self, text: str, target: str, regex_timeout: float) -> None:
        self.text = text
        self.target = target
        self.regex_timeout = regex_timeout
        self.attributes: set[str] = set()
        self.functions: set[str] = set()

    def error(self, hint: str, position: int) -> ExpressionSyntaxError:
        return ExpressionSyntaxError(hint, self.text, position)

    def compile(self, node: ast.Node) -> Arg:
        if isinstance(node, ast.Empty):
            raise self.error("empty expression", node.start)
        if isinstance(node, ast.Comparison):
            raise self.error(
                "a comparison is only allowed as the condition of IIF or inside CBool",
                node.op_start,
            )
        if isinstance(node, ast.Identifier):
            raise self.identifier_error(node)
        return self.node(node, top_level=True)

    def identifier_error(self, node: ast.Identifier) -> ExpressionSyntaxError:
        return self.error(
            f"unknown name {node.name!r}: attributes need square brackets ([{node.name}]) "
            f'and strings double quotes ("{node.name}")',
            node.start,
        )

    def node(self, node: ast.Node, *, top_level: bool = False) -> Arg:
        if isinstance(node, ast.Constant):
            return Arg(node, constant_evaluator(node.value), const=True, value=node.value)
        if isinstance(node, ast.Attribute):
            if not is_valid_name(node.name):
                raise self.error(f"invalid attribute name {node.name!r}", node.start)
            self.attributes.add(node.name)
            return Arg(node, reader(node.name))
        if isinstance(node, ast.Empty):
            return Arg(node, null_evaluator, const=True, value=None)
        if isinstance(node, ast.Identifier):
            return Arg(node, constant_evaluator(node.name), const=True, value=node.name)
        if isinstance(node, ast.Comparison):
            return self.comparison(node)
        return self.function(node, top_level=top_level)

    def comparison(self, node: ast.Comparison) -> Arg:
        sides = []
        for side in (node.left, node.right):
            if isinstance(side, ast.Identifier):
                raise self.identifier_error(side)
            sides.append(self.node(side))
        left, right = sides
        op = node.op
        lev, rev = left.ev, right.ev

        def comparison(user: Mapping[str, Any], ctx: MappingContext) -> Any:
            return bool_text(compare(op, lev(user, ctx), rev(user, ctx)))

        if left.const and right.const:
            value = comparison(_EMPTY_USER, DEFAULT_CONTEXT)
            return Arg(node, constant_evaluator(value), const=True, value=value)
        return Arg(node, comparison)

    def function(self, node: ast.Function, *, top_level: bool) -> Arg:
        spec = REGISTRY.get(node.name)
        if spec is None:
            guess = suggest(node.name, REGISTRY)
            hint = f"unknown function {node.name!r}"
            raise self.error(hint + (f" — did you mean {guess!r}?" if guess else ""), node.start)
        self.functions.add(node.name)
        n = len(node.args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            if spec.max_args is None:
                wanted = f"at least {spec.min_args}"
            elif spec.min_args == spec.max_args:
                wanted = str(spec.min_args)
            else:
                wanted = f"{spec.min_args} to {spec.max_args}"
            plural = "" if wanted == "1" else "s"
            raise self.error(
                f"{node.name} takes {wanted} argument{plural}, got {n}: {spec.signature}",
                node.start,
            )
        args: list[Arg] = []
        for i, arg in enumerate(node.args):
            if isinstance(arg, ast.Empty) and i not in spec.optional:
                raise self.error(
                    f"{node.name}: argument {i + 1} ({spec.param_name(i)}) cannot be empty",
                    arg.start,
                )
            if isinstance(arg, ast.Comparison) and i not in spec.conditions:
                raise self.error(
                    "a comparison is only allowed as the condition of IIF or inside CBool",
                    arg.op_start,
                )
            if isinstance(arg, ast.Identifier):
                allowed = spec.enums.get(i)
                if allowed is None:
                    raise self.identifier_error(arg)
                if arg.name not in allowed:
                    raise self.error(
                        f"{node.name}: {spec.param_name(i)} must be one of "
                        f"{', '.join(sorted(allowed))}, not {arg.name!r}",
                        arg.start,
                    )
            args.append(self.node(arg))
        call = Call(
            spec,
            node,
            tuple(args),
            expression=self.text,
            target=self.target,
            top_level=top_level,
            regex_timeout=self.regex_timeout,
        )
        ev = spec.build(call)
        if spec.pure and all(a.const for a in args):
            try:
                value = ev(_EMPTY_USER, DEFAULT_CONTEXT)
            except UserDataError as exc:
                raise self.error(str(exc), node.start) from exc
            return Arg(node, constant_evaluator(value), const=True, value=value)
        return Arg(node, ev)


def compile_expression(
    text: str,
    *,
    target: str = "",
    config_path: str | None = None,
    key: str | None = None,
    regex_timeout: float = DEFAULT_REGEX_TIMEOUT,
) -> CompiledExpression:
    """Parse and compile one expression.

    Args:
        text: the expression (at most 10,000 characters).
        target: the target attribute path it feeds (``SelectUniqueValue`` checks
            uniqueness there).
        config_path / key: where the expression came from, for error messages.
        regex_timeout: seconds one regular-expression match may take
            (``limits.regex_timeout``).

    Raises:
        ExpressionSyntaxError: a syntax, arity or argument-kind problem, with a caret; also
            a constant call that cannot be evaluated (a folded pattern that runs out of
            time included).
    """
    try:
        node = parse(text)
        compiler = _Compiler(text, target, regex_timeout)
        arg = compiler.compile(node)
    except ExpressionSyntaxError as exc:
        if config_path is None and key is None:
            raise
        raise exc.located(path=config_path, key=key) from exc
    attributes = frozenset(compiler.attributes)
    select: set[str] = set()
    for name in attributes:
        select |= select_names(name)
    return CompiledExpression(
        text=text,
        ast=node,
        evaluator=arg.ev,
        attributes=attributes,
        source_attributes=frozenset(select),
        functions=frozenset(compiler.functions),
        redacted="Redact" in compiler.functions,
        constant=arg.const,
        value=arg.value,
    )


# --- target coercion ----------------------------------------------------------------------


def _to_bool(value: Any) -> Any:
    if value is True or value is False:
        return value
    if isinstance(value, str):
        if value == "True":
            return True
        if value == "False":
            return False
        low = value.strip().lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
    raise UserDataError(f'expected a boolean ("True" or "False"), got {value!r}')


def _to_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip())
    except ValueError as exc:
        raise UserDataError(f"expected an integer, got {value!r}") from exc


def _to_decimal(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    try:
        return float(str(value).strip())
    except ValueError as exc:
        raise UserDataError(f"expected a number, got {value!r}") from exc


Coercion = Callable[[Any], Any]
_BY_SCIM_TYPE: dict[str, Coercion] = {
    "boolean": _to_bool,
    "integer": _to_int,
    "decimal": _to_decimal,
}


def _schema_types(
    schemas: Iterable[Mapping[str, Any]],
) -> dict[tuple[str | None, str, str | None], str]:
    """SCIM ``/Schemas`` resources → {(extension URN or None, attribute, sub): type}."""
    types: dict[tuple[str | None, str, str | None], str] = {}
    for schema in schemas:
        urn = str(schema.get("id", ""))
        owner = None if urn.lower() == CORE_USER.lower() else urn.lower()
        for attribute in schema.get("attributes") or ():
            name = str(attribute.get("name", "")).lower()
            types[(owner, name, None)] = str(attribute.get("type", "")).lower()
            for sub in attribute.get("subAttributes") or ():
                types[(owner, name, str(sub.get("name", "")).lower())] = str(
                    sub.get("type", "")
                ).lower()
    return types


def _coercion(
    path: ScimPath, types: dict[tuple[str | None, str, str | None], str] | None
) -> Coercion | None:
    """How a target's value is converted from the language's strings.

    Without a schema only ``active`` is known (SCIM core ``active`` is boolean); everything
    else stays a string, and multi-valued and complex results stay as they are.
    """
    schema = path.schema.lower() if path.schema else None
    attribute = path.attribute.lower()
    if types is not None:
        sub = path.sub.lower() if path.sub else ("value" if path.filter_attr else None)
        scim_type = types.get((schema, attribute, sub))
        if scim_type in _BY_SCIM_TYPE:
            return _BY_SCIM_TYPE[scim_type]
    if schema is None and attribute == "active" and path.sub is None and not path.filter_attr:
        return _to_bool
    return None


def _coerce_value(coerce: Coercion | None, value: Any) -> Any:
    if coerce is None or isinstance(value, list | dict):
        return value
    return coerce(value)


#: RFC 7643 §4.1.2 and §4.1.3: the multi-valued attributes of the core User schema
_CORE_MULTI_VALUED = frozenset(
    {
        "emails",
        "phonenumbers",
        "ims",
        "photos",
        "addresses",
        "groups",
        "entitlements",
        "roles",
        "x509certificates",
    }
)


def _multi_valued(path: ScimPath, multi: frozenset[tuple[str | None, str]] | None) -> bool:
    """Whether the target takes a list of values (else a list from the source is refused).

    A filtered path (``emails[type eq "work"].value``) names one value; a sub-attribute is
    one value; the core User schema's multi-valued attributes (``emails``, ``roles``…) take
    lists, the enterprise extension has none. Other extension attributes follow the
    target's ``/Schemas`` when given, and take lists when nothing says otherwise.
    """
    if path.filter_attr is not None or path.sub is not None:
        return False
    schema = path.schema.lower() if path.schema else None
    attribute = path.attribute.lower()
    if multi is not None:
        return (schema, attribute) in multi
    if schema is None:
        return attribute in _CORE_MULTI_VALUED
    return schema != ENTERPRISE_USER.lower()


def _schema_multi_valued(
    schemas: Iterable[Mapping[str, Any]],
) -> frozenset[tuple[str | None, str]]:
    """SCIM ``/Schemas`` resources → {(extension URN or None, attribute)} of multi-valued ones."""
    out: set[tuple[str | None, str]] = set()
    for schema in schemas:
        urn = str(schema.get("id", ""))
        owner = None if urn.lower() == CORE_USER.lower() else urn.lower()
        for attribute in schema.get("attributes") or ():
            if attribute.get("multiValued") is True:
                out.add((owner, str(attribute.get("name", "")).lower()))
    return frozenset(out)


def one_value(path: str, values: list[Any]) -> Any:
    """The value a single-valued target gets from a list-valued source.

    Entra fails such a user with ``SchemaPropertyCanOnlyAcceptValue``: "The property in the
    target system can only accept one value, but the property in the source system has
    multiple" (Microsoft Learn, "Known issues and error codes" of the provisioning logs;
    facts.md §2.4). A list of one value is that value, as the expression language reads a
    one-element list everywhere (:func:`bulkprov.mapping.values.text`); an empty list is
    null.
    """
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return _refuse_list(path, values)


def _refuse_list(path: str, values: list[Any]) -> Any:
    raise UserDataError(
        f"SchemaPropertyCanOnlyAcceptValue: the target attribute takes one value, the source "
        f"has {len(values)}; map a single-valued attribute (or one value of it) to {path}"
    )


# --- mapped users -------------------------------------------------------------------------


class MappedUser:
    """One user through the mapping table.

    Attributes:
        values: target path → value, in mapping order; null results are omitted; includes
            create-only values and "default value if null" fills.
        update_values: the subset that may be sent on update (no ``apply="creation"``
            paths, no default fills).
    """

    __slots__ = ("_body", "_digest", "_mapper", "_resource", "update_values", "values")

    def __init__(
        self, mapper: UserMapper, values: dict[str, Any], update_values: dict[str, Any]
    ) -> None:
        self._mapper = mapper
        self.values = values
        self.update_values = update_values
        self._resource: dict[str, Any] | None = None
        self._body: bytes | None = None
        self._digest: str | None = None

    @property
    def resource(self) -> dict[str, Any]:
        """The SCIM User resource for a POST: ``schemas`` (core + extensions used) and values."""
        if self._resource is None:
            self._resource = self._mapper.assemble(self.values)
        return self._resource

    @property
    def body(self) -> bytes:
        """``orjson.dumps(resource)``."""
        if self._body is None:
            self._body = orjson.dumps(self.resource)
        return self._body

    @property
    def digest(self) -> str:
        """A stable 32-hex-digit hash of ``update_values``: equal iff they are equal."""
        if self._digest is None:
            self._digest = hashlib.blake2b(
                orjson.dumps(self.update_values, option=orjson.OPT_SORT_KEYS), digest_size=16
            ).hexdigest()
        return self._digest

    @property
    def user_name(self) -> str | None:
        value = self.values.get("userName")
        return value if isinstance(value, str) else None

    def loggable_values(self) -> dict[str, Any]:
        """``values`` with every redacted target shown as ``[Redact]``."""
        redacted = self._mapper.redacted_paths
        if not redacted:
            return dict(self.values)
        return {k: (REDACTED if k in redacted else v) for k, v in self.values.items()}

    def __repr__(self) -> str:
        return f"MappedUser({self.loggable_values()!r})"


@dataclass(frozen=True, slots=True)
class _Row:
    path: str
    scim_path: ScimPath
    evaluator: Evaluator
    coerce: Coercion | None
    on_update: bool
    default: Any
    #: the target takes one value: a list from the source is one value, or refused
    single: bool = True


class UserMapper:
    """A compiled mapping table. Build it with :func:`compile_mappings`.

    Attributes:
        source_attributes: Graph user properties the mappings read (for ``$select``),
            always including ``id``, ``userPrincipalName`` and ``accountEnabled``.
        matching: target paths with a matching precedence, lowest number first.
        redacted_paths: targets whose expression calls ``Redact``.
        create_only_paths: targets of ``apply = "creation"`` mappings.
        additive_paths: targets of ``AppRoleAssignmentsComplex`` (PATCH ``Add`` only: roles
            are never removed, unlike ``AssertiveAppRoleAssignmentsComplex``).
        targets: every target path, in mapping order.
    """

    def __init__(
        self,
        rows: Sequence[_Row],
        *,
        source_attributes: frozenset[str],
        matching: tuple[str, ...],
        redacted_paths: frozenset[str],
        create_only_paths: frozenset[str],
        additive_paths: frozenset[str],
    ) -> None:
        self._rows = tuple(rows)
        self._fast = tuple(
            (r.path, r.evaluator, r.coerce, r.on_update, r.default, r.single) for r in rows
        )
        self._paths = {r.path: r.scim_path for r in rows}
        self.source_attributes = source_attributes
        self.matching = matching
        self.redacted_paths = redacted_paths
        self.create_only_paths = create_only_paths
        self.additive_paths = additive_paths
        self.targets = tuple(r.path for r in rows)

    def map_user(
        self, user: Mapping[str, Any], ctx: MappingContext = DEFAULT_CONTEXT
    ) -> MappedUser:
        """Run every mapping for one Graph user.

        Raises:
            UserDataError: a mapping cannot evaluate for this user (the message names the
                target); the pipeline records the user as a Failure and goes on.
        """
        values: dict[str, Any] = {}
        update: dict[str, Any] = {}
        path = ""
        try:
            for path, evaluate, coerce, on_update, default, single in self._fast:
                value = evaluate(user, ctx)
                if single and value.__class__ is list:
                    value = one_value(path, value)
                if value is None:
                    if default is not None:
                        values[path] = default
                    continue
                if coerce is not None and value.__class__ is not list:
                    value = coerce(value)
                values[path] = value
                if on_update:
                    update[path] = value
        except UserDataError as exc:
            raise UserDataError(f"{path}: {exc}") from exc
        except Exception as exc:  # a malformed Graph value must fail one user, not the run
            raise UserDataError(f"{path}: cannot map: {type(exc).__name__}: {exc}") from exc
        return MappedUser(self, values, update)

    def assemble(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Build a SCIM User resource from target path → value."""
        resource: dict[str, Any] = {"schemas": [CORE_USER]}
        schemas: list[str] = resource["schemas"]
        paths = self._paths
        for path, value in values.items():
            scim_path = paths.get(path) or parse_path(path)
            if scim_path.schema is not None and scim_path.schema not in schemas:
                schemas.append(scim_path.schema)
            if isinstance(value, list):
                # set_value may update elements in place; keep the mapped values intact.
                value = [dict(v) if isinstance(v, dict) else v for v in value]
            set_value(resource, scim_path, value)
        return resource


def compile_mappings(
    mappings: Sequence[AttributeMapping],
    resource_schemas: Iterable[Mapping[str, Any]] | None = None,
    config_path: str | None = None,
    *,
    regex_timeout: float = DEFAULT_REGEX_TIMEOUT,
) -> UserMapper:
    """Compile an attribute-mapping table into a :class:`UserMapper`.

    Args:
        mappings: the rows, as in ``Config.mappings``.
        resource_schemas: optional SCIM ``/Schemas`` resources of the target; their
            ``boolean``/``integer``/``decimal`` attributes are converted from the language's
            strings. Without them only ``active`` is (to a JSON boolean).
        config_path: the config file, for error messages.
        regex_timeout: seconds one regular-expression match may take
            (``limits.regex_timeout``).

    Raises:
        MappingError: naming the row (``mappings[3].expression``); expression problems are
            :class:`ExpressionSyntaxError` with a caret under the offending column.
    """
    schemas = list(resource_schemas) if resource_schemas is not None else None
    types = _schema_types(schemas) if schemas is not None else None
    multi = _schema_multi_valued(schemas) if schemas is not None else None
    rows: list[_Row] = []
    select: set[str] = set(ALWAYS_SELECTED)
    seen: dict[str, int] = {}
    precedences: dict[int, int] = {}
    redacted: set[str] = set()
    create_only: set[str] = set()
    additive: set[str] = set()

    def fail(message: str, key: str) -> MappingError:
        return MappingError(message, path=config_path, key=key)

    for i, m in enumerate(mappings):
        where = f"mappings[{i}]"
        try:
            scim_path = parse_path(m.target)
        except MappingError as exc:
            raise fail(str(exc), f"{where}.target") from exc
        path = m.target.strip()
        if scim_path.schema is None and scim_path.attribute.lower() == "id":
            raise fail(
                "'id' is assigned by the SCIM service and cannot be a mapping target",
                f"{where}.target",
            )
        low = path.lower()
        if low in seen:
            raise fail(
                f"target {path!r} is already mapped by mappings[{seen[low]}]", f"{where}.target"
            )
        seen[low] = i
        coerce = _coercion(scim_path, types)
        evaluator: Evaluator = null_evaluator
        if m.type == "direct":
            assert m.source is not None
            name = m.source.strip()
            if name.startswith("[") and name.endswith("]"):
                name = name[1:-1].strip()
            if not is_valid_name(name):
                raise fail(f"invalid source attribute name {m.source!r}", f"{where}.source")
            evaluator = reader(name)
            select |= select_names(name)
        elif m.type == "constant":
            assert m.constant is not None
            try:
                value = _coerce_value(coerce, m.constant)
            except UserDataError as exc:
                raise fail(f"constant for {path}: {exc}", f"{where}.constant") from exc
            evaluator = constant_evaluator(value)
            coerce = None
        elif m.type == "expression":
            assert m.expression is not None
            compiled = compile_expression(
                m.expression,
                target=path,
                config_path=config_path,
                key=f"{where}.expression",
                regex_timeout=regex_timeout,
            )
            select |= compiled.source_attributes
            if compiled.redacted:
                redacted.add(path)
            root = compiled.ast
            if isinstance(root, ast.Function) and root.name == "AppRoleAssignmentsComplex":
                additive.add(path)
            if "SelectUniqueValue" in compiled.functions:
                if m.matching_precedence is not None:
                    raise fail(
                        "SelectUniqueValue cannot be used on a matching attribute",
                        f"{where}.matching_precedence",
                    )
                if m.apply != "creation":
                    raise fail(
                        'SelectUniqueValue is only for object creation: set apply = "creation"',
                        f"{where}.apply",
                    )
            if compiled.constant:
                try:
                    value = _coerce_value(coerce, compiled.value)
                except UserDataError as exc:
                    raise fail(f"expression for {path}: {exc}", f"{where}.expression") from exc
                evaluator = constant_evaluator(value)
                coerce = None
            else:
                evaluator = compiled.evaluator
        default: Any = None
        if m.default is not None:
            try:
                default = _coerce_value(coerce, m.default)
            except UserDataError as exc:
                raise fail(f"default for {path}: {exc}", f"{where}.default") from exc
        if m.matching_precedence is not None:
            if m.type == "none":
                raise fail(
                    "a matching attribute needs a source, constant or expression",
                    f"{where}.matching_precedence",
                )
            other = precedences.get(m.matching_precedence)
            if other is not None:
                raise fail(
                    f"matching precedence {m.matching_precedence} is also used by "
                    f"mappings[{other}]",
                    f"{where}.matching_precedence",
                )
            precedences[m.matching_precedence] = i
        on_update = m.apply == "always"
        if not on_update:
            create_only.add(path)
        single = not _multi_valued(scim_path, multi)
        rows.append(_Row(path, scim_path, evaluator, coerce, on_update, default, single))
    matching = tuple(mappings[precedences[p]].target.strip() for p in sorted(precedences))
    return UserMapper(
        rows,
        source_attributes=frozenset(select),
        matching=matching,
        redacted_paths=frozenset(redacted),
        create_only_paths=frozenset(create_only),
        additive_paths=frozenset(additive),
    )


__all__ = [
    "ALWAYS_SELECTED",
    "REDACTED",
    "CompiledExpression",
    "MappedUser",
    "UserMapper",
    "compile_expression",
    "compile_mappings",
]
