"""Issue 13: secrets in what the commands print, file modes, terminal escapes, CSV formulas,
secrets in the config and strict config types (items 1, 2, 3, 4, 7, 8).

Each test runs the real command line (click's runner, in-process) against the simulators
served on loopback, or the function the commands call, as an outsider would.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bulkprov import _json, redact
from bulkprov.commands.starter import STARTER_TOML
from bulkprov.config import load_config
from bulkprov.errors import ConfigError, TargetRejected
from bulkprov.scim.responses import classify
from bulkprov.sim import NoFaults
from bulkprov.sim.http import SimRequest, SimResponse, json_response

from .cli_support import Cli, cli_fixture  # noqa: F401 - the `cli` fixture
from .conftest import SCIM_TOKEN

#: a UPN that, printed raw, retitles the terminal (OSC 0) and clears the screen (CSI 2J)
OSC = "\x1b]0;PWNED\x07\x1b[2J"
#: the escape character, and the other controls a terminal acts on
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e", "\u200f")


def enabled_users(cli: Cli) -> list[dict]:
    return [u for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False]


# -- 1. secrets in step output ---------------------------------------------------------


class EchoAuthorization(NoFaults):
    """A hostile target: it answers 400 to the /Users requests of ``methods`` with the
    request's Authorization header in the error detail (``prefix`` characters of filler
    before it)."""

    def __init__(self, methods: tuple[str, ...], prefix: int = 0) -> None:
        self.methods, self.prefix = methods, prefix

    async def before(self, req: SimRequest) -> SimResponse | None:
        if "/Users" not in req.path or req.method not in self.methods:
            return None
        detail = "x" * self.prefix + "you sent Authorization: " + req.headers["authorization"]
        return json_response(
            400,
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": "400",
                "detail": detail,
            },
        )


def assert_no_token(text: str) -> None:
    assert SCIM_TOKEN not in text
    assert SCIM_TOKEN[:8] not in text  # not even its start (a cut through it)


def test_test_connection_never_prints_an_echoed_token(cli: Cli):
    """test-connection quotes the target's refusal; a target that echoes the Authorization
    header gets the token masked, in text and in --json (it was printed as it is)."""
    cli.scim.faults = EchoAuthorization(("GET",))
    for args in (("test-connection",), ("test-connection", "--json")):
        result = cli(*args)
        assert result.exit_code == 5, result.output
        assert "you sent Authorization: Bearer [REDACTED]" in result.output
        assert_no_token(result.output)


def test_provision_never_prints_an_echoed_token(cli: Cli):
    """provision's "Perform action" step quotes the target's refusal of the create: the
    echoed token is masked in text and --json; so is a refused lookup (the error path)."""
    upn = enabled_users(cli)[0]["userPrincipalName"]
    cli.scim.faults = EchoAuthorization(("POST",))
    for args in (("provision", upn), ("provision", upn, "--json")):
        result = cli(*args)
        assert result.exit_code == 10, result.output
        assert "you sent Authorization: Bearer [REDACTED]" in result.output
        assert_no_token(result.output)
    cli.scim.faults = EchoAuthorization(("GET",))
    result = cli("provision", upn)
    assert result.exit_code == 5 and "[REDACTED]" in result.output
    assert_no_token(result.output)


def test_sync_logs_and_report_never_show_an_echoed_token(cli: Cli):
    """Every user's create is refused with the token in the detail, 290 characters in: the
    stored reasons, `logs` (text, --json, --csv) and the report mask it, and no cut of the
    detail shows its start (the detail was cut at 300 characters before being scrubbed)."""
    cli.scim.faults = EchoAuthorization(("POST",), prefix=280 - len("you sent Authorization: "))
    assert cli("sync", "--quiet").exit_code == 8  # quarantined: every create refused
    outputs = [
        cli("logs", "--status", "failure").output,
        cli("logs", "--status", "failure", "--json").output,
        cli("status", "--json").output,
        cli("report").output,
    ]
    csv_dir = cli.state.parent / "csv"
    cli("logs", "--limit", "0", "--csv", str(csv_dir))
    outputs += [p.read_text() for p in csv_dir.iterdir()]
    reports = cli.state.with_name(cli.state.name + ".reports")
    outputs += [p.read_text() for p in reports.glob("*.html")]
    con = sqlite3.connect(cli.state)
    outputs += list(con.iterdump())
    con.close()
    blob = "\n".join(outputs)
    assert "you sent Authorization: Bearer [REDACTED]" in blob
    assert_no_token(blob)


def test_a_detail_cut_through_a_secret_shows_none_of_it():
    """The target's detail is cut at 300 characters: scrubbed first, and a cut inside a
    token masks its start (it showed the token's first characters)."""
    token = "cut-through-token-5f1d9a2e7c"
    redact.register(token)
    for before in (250, 290, 296):
        body = _json.dumps({"detail": "x" * before + "Bearer " + token})
        with pytest.raises(TargetRejected) as info:
            classify(400, {}, body)
        assert token[:6] not in str(info.value), before
        text = (b"y" * before + b" Bearer " + token.encode()).decode()
        with pytest.raises(TargetRejected) as info:
            classify(400, {}, text.encode())
        assert token[:6] not in str(info.value), before


def test_a_secret_is_masked_in_json_text_too():
    """A secret holding a quote or a backslash is written escaped in JSON (``--json``
    output, stored JSON): that form is masked as well."""
    secret = 'quote"and\\backslash-secret'
    redact.register(secret)
    text = _json.dumps({"detail": f"token {secret} refused"}).decode()
    assert "backslash-secret" not in redact.scrub(text)
    assert "backslash-secret" not in redact.shown_json(text)


# -- 2. file modes -----------------------------------------------------------------------


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_with_directory_data_is_0600_whatever_the_umask(cli: Cli, tmp_path):
    """Under a umask of 0 (files would be 0666, folders 0777): the state database and its
    -wal/-shm and .inflight, the reports folder (0700), run-N.html and its samples, plan.json, the log's
    CSV export (a folder it creates: 0700), `state export` and `init`'s config are 0600."""
    with umask(0):
        assert cli("sync", "--quiet").exit_code == 0
        reports = cli.state.with_name(cli.state.name + ".reports")
        assert mode(reports) == 0o700
        written = sorted(reports.iterdir())
        assert {p.name for p in written} == {"run-1.html", "run-1.samples.jsonl"}
        assert cli("report").exit_code == 0
        plan = tmp_path / "plan.json"
        assert cli("plan", "--out", str(plan)).exit_code == 0
        export = tmp_path / "exports" / "csv"
        assert cli("logs", "--limit", "0", "--csv", str(export)).exit_code == 0
        backup = tmp_path / "backup.sqlite3"
        assert cli("state", "export", str(backup)).exit_code == 0
        starter = tmp_path / "new.toml"
        assert cli("init", "--path", str(starter), config=False).exit_code == 0
        con = sqlite3.connect(cli.state)  # a reader: the -wal and -shm exist meanwhile
        con.execute("SELECT count(*) FROM users").fetchone()
        beside = [cli.state.with_name(cli.state.name + s) for s in ("-wal", "-shm", ".inflight")]
        files = [cli.state, *beside, *written, plan, *export.iterdir(), backup, starter]
        modes = {str(p): oct(mode(p)) for p in files}
        con.close()
    assert len(list(export.iterdir())) == 3
    assert modes == {str(p): oct(0o600) for p in files}
    assert mode(export) == 0o700 and mode(export.parent) == 0o700


def test_a_loose_report_or_state_from_before_is_tightened(cli: Cli):
    """Files an older bulkprov (or a `cp`) left 0644, and a 0755 reports folder, are made
    0600 / 0700 the next time bulkprov writes or opens them."""
    assert cli("sync", "--quiet").exit_code == 0
    reports = cli.state.with_name(cli.state.name + ".reports")
    html = reports / "run-1.html"
    inflight = cli.state.with_name(cli.state.name + ".inflight")
    for p in (cli.state, html, inflight):
        p.chmod(0o644)
    reports.chmod(0o755)
    assert cli("report", "1").exit_code == 0
    assert mode(reports) == 0o700 and mode(html) == 0o600
    assert mode(cli.state) == 0o600  # opened to read the run
    cli.state.chmod(0o644)
    cli.tenant.update_user(enabled_users(cli)[0]["id"], department="Changed")
    assert cli("sync", "--quiet").exit_code == 0
    assert mode(cli.state) == 0o600 and mode(inflight) == 0o600  # creates in flight
    assert {p.name: mode(p) for p in reports.glob("run-2.*")} == {
        "run-2.html": 0o600,
        "run-2.samples.jsonl": 0o600,
    }


# -- 3. terminal escapes -----------------------------------------------------------------


def assert_inert(text: str) -> None:
    for c in RAW_CONTROLS:
        assert c not in text, (c, text[:300])


def test_a_hostile_upn_prints_inert_everywhere(cli: Cli):
    """A UPN holding an OSC title sequence and a clear-screen (it fails: control
    characters), another holding a right-to-left override (valid: it is provisioned, then
    its disable is held): logs, status, staged, provision and the sync's own output show
    them escaped (``\\x1b]0;PWNED``, ``\\u202e``), never raw."""
    cli.tenant.add_user(userPrincipalName=f"{OSC}@corp.example", accountEnabled=True)
    rtl = cli.tenant.add_user(userPrincipalName="\u202eadmin@corp.example", accountEnabled=True)
    text = cli.config.read_text()
    cli.config.write_text(text.replace("threshold = 500", "threshold = 0"))
    outputs = [cli("sync").output]
    cli.tenant.delete_user(rtl["id"], soft=True)
    held = cli("sync")
    assert held.exit_code == 9, held.output
    outputs.append(held.output)
    commands = (
        ("logs",),
        ("logs", "--status", "failure"),
        ("logs", "--json"),
        ("status",),
        ("status", "--json"),
        ("staged",),
        ("staged", "--json"),
        ("provision", f"{OSC}@corp.example"),
        ("provision", f"{OSC}@corp.example", "--json"),
        ("provision", OSC),  # no such user: the error quotes it
    )
    outputs += [cli(*args).output for args in commands]
    blob = "\n".join(outputs)
    assert_inert(blob)
    assert "\\x1b]0;PWNED\\x07\\x1b[2J@corp.example" in blob  # shown, escaped
    assert "\\u202eadmin@corp.example" in blob


def test_inert_escapes_every_control_and_keeps_text():
    """The helper every terminal output uses: C0, DEL, C1, bidirectional controls and line
    breaks escaped; accents, other scripts, emoji kept."""
    assert redact.inert(OSC) == "\\x1b]0;PWNED\\x07\\x1b[2J"
    assert redact.inert("a\nb\tc\r\x00\x7f\x9b") == "a\\nb\\tc\\r\\x00\\x7f\\x9b"
    assert redact.inert("\u202e\u2066\u200f\u061c\u2028") == "\\u202e\\u2066\\u200f\\u061c\\u2028"
    kept = "José Müller 山田 שלום 🙂 O'Brien \\x1b"
    assert redact.inert(kept) == kept
    assert redact.shown("error\nunder", lines=True) == "error\nunder"
    assert _json.loads(redact.shown_json(_json.dumps({"a": "\x9b\u202e"}).decode())) == {
        "a": "\x9b\u202e"
    }


# -- 4. CSV formulas -----------------------------------------------------------------------


FORMULAS = ('=HYPERLINK("http://evil.example","click")', "@SUM(1+1)", "+1+1", "-2+3")


def test_the_entra_csv_export_neutralises_formulas(cli: Cli, tmp_path):
    """Users whose names and department start a formula: no cell of the three CSV files
    starts with =, +, -, @, tab or CR; the value is kept after a single quote."""
    for i, formula in enumerate(FORMULAS):
        cli.tenant.add_user(
            userPrincipalName=f"formula{i}@corp.example",
            displayName=formula,
            department=formula,
            accountEnabled=True,
        )
    cli.tenant.add_user(userPrincipalName="tab@corp.example", displayName="\t=1+1")
    assert cli("sync", "--quiet").exit_code == 10  # the tab is a control character
    out = tmp_path / "csv"
    assert cli("logs", "--limit", "0", "--csv", str(out)).exit_code == 0
    cells = [
        cell
        for p in out.iterdir()
        for row in csv.reader(io.StringIO(p.read_text(encoding="utf-8"), newline=""))
        for cell in row
    ]
    assert cells
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    for formula in FORMULAS:
        assert "'" + formula in cells


def test_csv_cell_follows_owasp():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert redact.csv_cell(start + "1") == "'" + start + "1"
    assert redact.csv_cell("jane@contoso.com") == "jane@contoso.com"
    assert redact.csv_cell("") == ""


# -- 7. secrets in the config ------------------------------------------------------------


def starter(tmp_path: Path, text: str = STARTER_TOML) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_a_token_with_a_line_break_is_exit_2_naming_the_key(cli: Cli):
    """A SCIM token with CR/LF inside (a pasted second line) crashed with a traceback: it is
    a config error (exit 2) naming target.token and the variable, never the value."""
    from click.testing import CliRunner

    from bulkprov.cli import main

    from .conftest import GRAPH_SECRET

    for bad in ("scim-token-part1\r\nX-Injected: 1", "first-line\nsecond-line", "tok\x01en-abc"):
        env = {"BULKPROV_GRAPH_SECRET": GRAPH_SECRET, "BULKPROV_SCIM_TOKEN": bad}
        for args in (("test-connection",), ("sync", "--quiet")):
            result = CliRunner().invoke(main, [*args, "-c", str(cli.config)], env=env)
            assert result.exit_code == 2, (args, result.output, result.exception)
            assert "target.token" in result.output
            assert "BULKPROV_SCIM_TOKEN" in result.output
            assert "Traceback" not in result.output
            for part in (p for p in bad.split() if len(p) >= 5):  # not "1" of a path
                assert part not in result.output


def test_an_inline_secret_says_how_to_give_it(tmp_path):
    """`token = "…"` in the file: the message says { env = "…" } or { file = "…" } and never
    echoes the value."""
    secret = "inline-secret-value-123"
    for key in ("token", "client_secret"):
        text = STARTER_TOML.replace(
            'token = { env = "BULKPROV_SCIM_TOKEN" }', f'token = "{secret}"'
        ).replace(
            'client_secret = { env = "BULKPROV_GRAPH_SECRET" }', f'client_secret = "{secret}"'
        )
        with pytest.raises(ConfigError) as info:
            load_config(starter(tmp_path, text))
        message = str(info.value)
        assert secret not in message and key in message
        assert '{ env = "' in message and '{ file = "' in message


def test_an_empty_variable_is_empty_not_unset(tmp_path, monkeypatch):
    cfg = load_config(starter(tmp_path))
    monkeypatch.setenv("BULKPROV_SCIM_TOKEN", "  ")
    with pytest.raises(ConfigError) as info:
        cfg.target.token.read("target.token", "c.toml")
    assert "BULKPROV_SCIM_TOKEN is empty" in str(info.value)
    monkeypatch.delenv("BULKPROV_SCIM_TOKEN")
    with pytest.raises(ConfigError) as info:
        cfg.target.token.read("target.token", "c.toml")
    assert "BULKPROV_SCIM_TOKEN is not set" in str(info.value)


def test_a_multiline_private_key_is_still_read(tmp_path):
    """A PEM private key is the one secret of several lines."""
    from bulkprov.config import SecretSource

    pem = tmp_path / "key.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\nMIIE\nAAAA\n-----END PRIVATE KEY-----\n")
    pem.chmod(0o600)
    value = SecretSource(file=pem).read("graph.certificate.private_key", None)
    assert value.get_secret_value().count("\n") == 3
    with pytest.raises(ConfigError, match="line break"):
        SecretSource(file=pem).read("graph.client_secret", None)


def test_a_secret_file_others_can_read_is_warned_about(cli: Cli, tmp_path):
    """A token file readable by its group or others: every command warns (standard error),
    naming the file and the fix; a 0600 file gets no warning."""
    token = tmp_path / "scim.token"
    token.write_text(SCIM_TOKEN + "\n")
    token.chmod(0o644)
    text = cli.config.read_text().replace(
        'token = { env = "BULKPROV_SCIM_TOKEN" }', f'token = {{ file = "{token}" }}'
    )
    assert text != cli.config.read_text()
    cli.config.write_text(text)
    for args in (("test-connection",), ("status",)):
        result = cli(*args)
        assert f"warning: target.token: secret file {token} is mode 0644" in result.output
        assert "chmod 600" in result.output and SCIM_TOKEN not in result.output
    assert cli("test-connection").exit_code == 0
    token.chmod(0o600)
    assert "warning" not in cli("test-connection").output


# -- 8. strict config ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("threshold = 500", 'threshold = "5"', "deprovision.threshold"),
        ("threshold = 500", "threshold = 5.5", "deprovision.threshold"),
        ("delete_hard_deleted = false", 'delete_hard_deleted = "no"', "delete_hard_deleted"),
        ("delete_hard_deleted = false", "delete_hard_deleted = 0", "delete_hard_deleted"),
        ("enabled = true", "enabled = 1", "groups.enabled"),
        ("concurrency = 16", 'concurrency = "16"', "target.concurrency"),
        ("rate_limit = 60", 'rate_limit = "60"', "target.rate_limit"),
        ("# clear_on_null = false", 'clear_on_null = "false"', "target.clear_on_null"),
        ("# clear_on_null = false", "clear_on_null = 1", "target.clear_on_null"),
        ("light_per_second = 80", 'light_per_second = "80"', "target.zoom.light_per_second"),
        ("medium_per_second = 60", "medium_per_second = true", "target.zoom.medium_per_second"),
    ],
)
def test_safety_settings_take_strict_types(tmp_path, old, new, key):
    """A quoted number or a string/number for a switch is refused, never coerced ("no" was
    read as false, "5" as 5)."""
    text = STARTER_TOML.replace(old, new, 1)
    assert text != STARTER_TOML
    with pytest.raises(ConfigError) as info:
        load_config(starter(tmp_path, text))
    assert key in str(info.value) and "without quotes" in str(info.value)


def test_numbers_still_read_as_toml_writes_them(tmp_path):
    text = STARTER_TOML.replace("rate_limit = 60", "rate_limit = 12.5").replace(
        "threshold = 500", "threshold = 7"
    )
    cfg = load_config(starter(tmp_path, text))
    assert cfg.target.rate_limit == 12.5 and cfg.deprovision.threshold == 7
    zoom = STARTER_TOML.replace("light_per_second = 80", "light_per_second = 12.5")
    assert load_config(starter(tmp_path, zoom)).target.zoom.light_per_second == 12.5


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("threshold = 500", "treshold = 500", "did you mean 'threshold'?"),
        ("delete_hard_deleted = false", "delete_hard_delete = true", "'delete_hard_deleted'"),
        ("concurrency = 16", "concurency = 16", "did you mean 'concurrency'?"),
        ("[deprovision]", "[deprovisioning]", "did you mean 'deprovision'?"),
        ("[[mappings]]", "[[mappings]]\nsorce = 'x'", "did you mean 'source'?"),
    ],
)
def test_an_unknown_key_names_the_closest_one(tmp_path, old, new, expected):
    text = STARTER_TOML.replace(old, new, 1)
    assert text != STARTER_TOML
    with pytest.raises(ConfigError) as info:
        load_config(starter(tmp_path, text))
    assert expected in str(info.value)
