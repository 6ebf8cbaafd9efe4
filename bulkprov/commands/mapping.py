"""``bulkprov mapping test|export|import``: try the attribute mappings and move them around.

``test`` evaluates the config's mappings (or one expression) for one Graph user, read from
a file or fetched from Graph (:func:`_fetch_user`); ``export`` and ``import`` convert
between the config's TOML and Graph's attributeMapping JSON. The work is in
:mod:`bulkprov.mapping.exchange`, imported inside each command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bulkprov import _json
from bulkprov.commands._shared import EPILOG, _fail, _load, _run, config_option, echo, echo_json
from bulkprov.errors import BulkProvError, ConfigError


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
        result = evaluate_user(list(cfg.mappings), user, expression)
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

    from bulkprov import credentials
    from bulkprov.graph.client import GraphClient
    from bulkprov.pipeline import Engine
    from bulkprov.transport import make_client

    cert = cfg.graph.certificate
    secret = (
        cert.private_key.read("graph.certificate.private_key", cfg.source_path)
        if cert
        else cfg.graph.client_secret.read("graph.client_secret", cfg.source_path)
    )
    select = Engine(cfg).select
    network = credentials.proxies(cfg)
    async with make_client(
        timeout=cfg.graph.timeout,
        max_connections=2,
        verify=credentials.verify(cfg.graph.ca_file),
        proxies=network,
    ) as http:
        graph = GraphClient(
            authority=cfg.graph.authority,
            tenant_id=cfg.graph.tenant_id,
            client_id=cfg.graph.client_id,
            client_secret=secret,
            base_url=cfg.graph.base_url,
            http=http,
            token_source=credentials.graph_tokens(cfg, secret, network=network),
        )
        query = urlencode({"$select": ",".join(select)}, safe="$,")
        return await graph.get_json(f"{graph.base_url}/users/{quote(key, safe='@')}?{query}")


@mapping.command("export", epilog=EPILOG)
@config_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["graph-json", "toml"]),
    default="graph-json",
    show_default=True,
)
def mapping_export(config_path: Path, fmt: str) -> None:
    """Print the config's mappings as Graph attributeMapping JSON or as TOML.

    \b
    Examples:
      bulkprov mapping export > mappings.json
      bulkprov mapping export --format toml
    """
    from bulkprov.mapping.exchange import to_graph, to_toml

    cfg = _load(config_path)
    if fmt == "toml":
        click.echo(to_toml(list(cfg.mappings)), nl=False)
    else:
        echo_json(to_graph(list(cfg.mappings)))


@mapping.command("import", epilog=EPILOG)
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "graph-json", "toml"]),
    default="auto",
    show_default=True,
)
def mapping_import(source: Path, fmt: str) -> None:
    """Read mappings (Graph attributeMapping JSON or TOML), check them, print [[mappings]].

    Paste the output into bulkprov.toml in place of its [[mappings]] tables. The mappings
    are compiled first, so an error names the row and points at the column.

    \b
    Examples:
      bulkprov mapping import entra-mappings.json >> new-config.toml
      bulkprov mapping import old.toml
    """
    from bulkprov.mapping.exchange import check, from_graph, from_toml, to_toml

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
            rows = from_graph(doc)
        else:
            rows = from_toml(text)
        check(rows)
    except BulkProvError as exc:
        _fail(exc)
    click.echo(to_toml(rows), nl=False)
    echo(f"{len(rows)} mappings checked", err=True)
