"""``bulkprov mapping test|export|import``: try the attribute mappings and move them around.

``test`` evaluates the config's mappings (or one expression) for one Graph user, read from
a file or fetched from Graph (:func:`_fetch_user`); ``export`` and ``import`` convert
between the config's TOML and Entra's JSON (a synchronizationSchema, an objectMapping or
attributeMapping objects). The work is in :mod:`bulkprov.mapping.exchange`, imported
inside each command; what import prints is validated as a config load validates it
(:func:`_validate`), so it loads.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from bulkprov import _json
from bulkprov.commands._shared import EPILOG, _fail, _load, _run, config_option, echo, echo_json
from bulkprov.errors import BulkProvError, ConfigError

if TYPE_CHECKING:
    from bulkprov.mapping.exchange import Imported


@click.group(epilog=EPILOG)
def mapping() -> None:
    """Try attribute mappings on a user; export and import them (Graph JSON or TOML)."""


@mapping.command("test", epilog=EPILOG)
@config_option
@click.option("--expression", "-e", default=None, help="Evaluate this one expression instead.")
@click.option(
    "--user-json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A Graph user as JSON (what GET /users/{id} returns).",
)
@click.option("--user", "user_key", default=None, help="Fetch this user from Graph (UPN or id).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def mapping_test(
    config_path: Path,
    expression: str | None,
    user_json: Path | None,
    user_key: str | None,
    as_json: bool,
) -> None:
    """Evaluate the config's mappings (or one --expression) for one Graph user.

    \b
    Examples:
      bulkprov mapping test --user-json jane.json
      bulkprov mapping test --user jane@contoso.com
      bulkprov mapping test --user-json jane.json -e 'Join(" ", [givenName], [surname])'
    """
    from bulkprov.mapping.exchange import evaluate_user

    if (user_json is None) == (user_key is None):
        raise click.UsageError("give exactly one of --user-json FILE or --user UPN")
    cfg = _load(config_path)
    if user_json is not None:
        try:
            user = _json.loads(user_json.read_bytes())
        except _json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--user-json") from exc
    else:
        assert user_key is not None
        user = _run(_fetch_user, cfg, user_key)
    if not isinstance(user, dict):
        raise click.BadParameter("the user must be a JSON object", param_hint="--user-json")
    try:
        result = evaluate_user(
            list(cfg.mappings), user, expression, regex_timeout=cfg.limits.regex_timeout
        )
    except BulkProvError as exc:
        _fail(exc)
    if as_json:
        echo_json(result)
        return
    if expression is not None:
        echo_json(result["value"])
        return
    for path, value in result["values"].items():
        flag = "" if path in result["on_update"] else "   (creation only / default)"
        echo(f"{path} = {_json.dumps(value).decode()}{flag}")
    echo(f"matching on: {', '.join(result['matching'])}")


async def _fetch_user(cfg: Any, key: str) -> Any:
    from urllib.parse import quote, urlencode

    from bulkprov.pipeline import Engine, open_graph

    select = Engine(cfg).select
    async with open_graph(cfg) as graph:
        query = urlencode({"$select": ",".join(select)}, safe="$,")
        return await graph.get_json(f"{graph.base_url}/users/{quote(key, safe='@')}?{query}")


@mapping.command("export", epilog=EPILOG)
@config_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["graph-json", "graph-schema", "toml"]),
    default="graph-json",
    show_default=True,
    help="graph-json: the user objectMapping (attributeMappings and scope); graph-schema: a "
    "synchronizationSchema with the user and group mappings; toml: [[mappings]] and "
    "[[scope.filters]] tables.",
)
def mapping_export(config_path: Path, fmt: str) -> None:
    """Print the config's mappings and scoping filters as Entra's JSON or as TOML.

    \b
    Examples:
      bulkprov mapping export > mapping.json
      bulkprov mapping export --format graph-schema > schema.json
      bulkprov mapping export --format toml
    """
    from bulkprov.mapping.exchange import to_object_mapping, to_schema, to_toml

    cfg = _load(config_path)
    mappings, filters = list(cfg.mappings), list(cfg.scope.filters)
    if fmt == "toml":
        click.echo(to_toml(mappings, filters), nl=False)
    elif fmt == "graph-schema":
        echo_json(to_schema(mappings, filters, groups=cfg.groups.enabled))
    else:
        echo_json(to_object_mapping(mappings, filters))


@mapping.command("import", epilog=EPILOG)
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "graph-json", "toml"]),
    default="auto",
    show_default=True,
    help="graph-json reads a synchronizationSchema, an objectMapping or attributeMapping objects.",
)
@click.option(
    "--object-mapping",
    "object_mapping",
    default=None,
    metavar="NAME",
    help="The schema's user objectMapping to take (default: the first enabled one of Users).",
)
@click.option(
    "--groups/--no-groups",
    "groups",
    default=None,
    help="Take the schema's group mapping, or leave it out (default: as it is enabled).",
)
def mapping_import(source: Path, fmt: str, object_mapping: str | None, groups: bool | None) -> None:
    """Read Entra's JSON (or TOML), check it, print [[mappings]] and [[scope.filters]].

    Entra's JSON is the synchronizationSchema that Graph's
    GET /servicePrincipals/{id}/synchronization/jobs/{jobId}/schema returns (or the file
    the portal's "Review your schema" downloads), one objectMapping, or attributeMapping
    objects. What was taken and what was left is said on stderr. The result is checked
    as loading a config checks it, so an error names the row and points at the column;
    paste the output into bulkprov.toml in place of its [[mappings]] and
    [[scope.filters]] tables.

    \b
    Examples:
      bulkprov mapping import schema.json >> new-config.toml
      bulkprov mapping import schema.json --no-groups
      bulkprov mapping import old.toml
    """
    from bulkprov.mapping.exchange import from_graph, from_toml, to_toml

    text = source.read_text(encoding="utf-8")
    if fmt == "auto":  # by suffix; else JSON if it parses (TOML's [[mappings]] starts with "[")
        if source.suffix.lower() in (".json", ".toml"):
            fmt = "graph-json" if source.suffix.lower() == ".json" else "toml"
        else:
            try:
                _json.loads(text)
                fmt = "graph-json"
            except _json.JSONDecodeError:
                fmt = "toml"
    try:
        if fmt == "graph-json":
            try:
                doc = _json.loads(text)
            except _json.JSONDecodeError as exc:
                raise ConfigError(f"not JSON: {exc}", path=str(source)) from exc
            imported = from_graph(doc, object_mapping=object_mapping, groups=groups)
        else:
            imported = from_toml(text)
    except BulkProvError as exc:
        if isinstance(exc, ConfigError) and exc.path is None:
            exc = ConfigError(str(exc), path=str(source))
        _fail(exc)
    for note in imported.notes:
        echo(note, err=True)
    for warning in imported.warnings:
        echo(f"warning: {warning}", fg="yellow", err=True)
    _validate(imported, source)
    click.echo(to_toml(imported.mappings, imported.filters), nl=False)
    filters = len(imported.filters)
    echo(
        f"{len(imported.mappings)} mappings"
        + (f" and {filters} scoping filter{'' if filters == 1 else 's'}" if filters else "")
        + " checked",
        err=True,
    )


_ROW = re.compile(r"mappings\[(\d+)\]")


def _validate(imported: Imported, source: Path) -> None:
    """Check the import as loading a config does: the config model's rules (a userName
    mapping, a matching attribute, no target twice), then the mapping table and the
    scoping filters compiled as a run compiles them (:class:`~bulkprov.pipeline.Engine`)."""
    from bulkprov.config import parse_config
    from bulkprov.pipeline import Engine

    data: dict[str, Any] = {
        "graph": {"tenant_id": "-", "client_id": "-"},
        "target": {"base_url": "https://scim.invalid"},
        "mappings": imported.mappings,
        "scope": {"filters": imported.filters},
    }
    try:
        Engine(parse_config(data, path=str(source)))
    except BulkProvError as exc:
        _fail_on_row(exc, imported)


def _fail_on_row(exc: BulkProvError, imported: Imported) -> NoReturn:
    """Fail; when the error names a row (``mappings[3]``), say which target that is."""
    row = _ROW.match(getattr(exc, "key", None) or "")
    if row is None or int(row.group(1)) >= len(imported.mappings):
        _fail(exc)
    echo(f"error: {exc}", fg="red", err=True)
    target = imported.mappings[int(row.group(1))].target
    echo(f"(mappings[{row.group(1)}] is the mapping of {target!r})", err=True)
    sys.exit(exc.exit_code)
