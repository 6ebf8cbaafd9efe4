"""The operator commands, in-process through click: output and exit code of each."""

from __future__ import annotations

import asyncio
import csv
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner

from bulkprov.cli import main
from bulkprov.observe import progress
from bulkprov.sim import NoFaults, SimResponse
from bulkprov.sim.http import SimRequest, json_response
from bulkprov.sim.scim.service import scim_error

from .cli_support import Cli, cli_fixture  # noqa: F401 - the `cli` fixture
from .conftest import GRAPH_SECRET, SCIM_TOKEN


def events(output: str) -> list[dict]:
    return [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]


class Faulty(NoFaults):
    """Reject the POSTs of some users (400) and throttle every 15th request (429)."""

    def __init__(self, reject: set[str]) -> None:
        self.reject = reject
        self.seen = 0
        self.throttled = 0

    async def before(self, req: SimRequest) -> SimResponse | None:
        self.seen += 1
        if self.seen % 15 == 0:
            self.throttled += 1
            return scim_error(429, "Too many requests", headers={"Retry-After": "0.01"})
        if req.method == "POST":
            name = orjson.loads(req.body).get("userName", "").lower()
            if name in self.reject:
                return scim_error(400, f"invalid email for {name}", "invalidValue")
        return None


def all_commands() -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in main.commands.items():
        if isinstance(cmd, click.Group):
            out += [(f"{name} {sub}", c) for sub, c in cmd.commands.items()]
        out.append((name, cmd))
    return out


@pytest.mark.parametrize("name", [n for n, _ in all_commands() if n != "sim"])
def test_every_command_has_help_with_an_example_and_exit_codes(name):
    result = Cli(Path("x"), Path("x"), None, None, None)(*name.split(), "--help", config=False)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    cmd = dict(all_commands())[name]
    if not isinstance(cmd, click.Group):
        assert "Example" in result.output
    assert "Exit codes:" in result.output
    assert "BULKPROV_CONFIG" in result.output


@pytest.mark.slow  # ~20 s: renders the HTML report in headless chromium
def test_sync_json_events_report_and_logs(cli: Cli, tmp_path):
    users = [u for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False]
    rejected = {u["userPrincipalName"].lower() for u in users[:3]}
    faults = Faulty(rejected)
    cli.scim.faults = faults
    result = cli("sync", "--json")
    assert result.exit_code == 10, result.output  # completed, some users failed
    evs = events(result.output)
    finished = evs[-1]
    assert finished["event"] == "finished"
    assert finished["counts"]["failed"] == 3
    assert finished["counts"]["created"] == len(users) - 3
    assert finished["throttled"] == faults.throttled > 0
    report = Path(finished["report"])
    assert report.exists()

    # the report, rendered by headless Chromium, shows the run's own figures
    dom = render_dom(report, tmp_path)
    figures = dict(re.findall(r'data-figure="([^"]+)">([^<]*)<', dom))
    for key, value in finished["counts"].items():
        assert figures[f"count.{key}"].replace(",", "") == str(value), key
    assert figures["status"] == "completed_with_failures"
    assert figures["users"].replace(",", "") == str(sum(finished["counts"].values()))
    assert figures["throttled"] == str(faults.throttled)
    assert figures["requests"].replace(",", "") == str(finished["requests"])
    assert figures["failures"] == "3"
    failure_rows = re.findall(r"<tr data-failure=\"\"><td>([^<]*)</td>", dom)
    assert {r.lower() for r in failure_rows} == rejected
    assert "invalid email for" in dom
    assert re.search(r'data-chart="throughput" data-points="[1-9]', dom)
    assert re.search(r'data-chart="throttled" data-points="[1-9]', dom)

    # logs: filters by status, action, user and time; JSON lines
    out = cli("logs", "--status", "failure", "--json")
    assert out.exit_code == 0
    failed = [orjson.loads(line) for line in out.output.splitlines()]
    assert {f["user_name"].lower() for f in failed} == rejected
    assert all("invalid email" in f["reason"] for f in failed)
    one = failed[0]["user_name"]
    assert len(cli("logs", "--user", one, "--json").output.splitlines()) == 1
    created = cli("logs", "--action", "create", "--limit", "0", "--json").output.splitlines()
    assert len(created) == len(users) - 3 + 3  # the failed creates are logged as create too
    assert cli("logs", "--since", "1h", "--limit", "0").output.count("\n") == 240
    assert cli("logs", "--since", "2999-01-01").output == ""
    bad = cli("logs", "--since", "yesterday")
    assert bad.exit_code == 2 and "neither a duration" in bad.output

    # CSV shaped like Entra's download: three files joined by change ID
    out = cli("logs", "--limit", "0", "--csv", str(tmp_path / "csv"))
    assert out.exit_code == 0
    with (tmp_path / "csv" / "ProvisioningLogs.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (tmp_path / "csv" / "ProvisioningLogs_ProvisioningSteps.csv").open() as f:
        steps = list(csv.DictReader(f))
    with (tmp_path / "csv" / "ProvisioningLogs_ModifiedProperties.csv").open() as f:
        props = list(csv.DictReader(f))
    assert len(rows) == 240
    ids = {r["Change ID"] for r in rows}
    assert {s["Change ID"] for s in steps} == ids
    assert {p["Change ID"] for p in props} <= ids
    assert sum(r["Status"] == "Failure" for r in rows) == 3
    assert {r["Action"] for r in rows} == {"Create", "Other"}
    create = next(r for r in rows if r["Action"] == "Create" and r["Status"] == "Success")
    its_props = {
        p["Display Name"]: p["New Value"] for p in props if p["Change ID"] == create["Change ID"]
    }
    assert its_props["userName"] == create["Source Identity Name"]
    its_steps = [s["Step Type"] for s in steps if s["Change ID"] == create["Change ID"]]
    assert its_steps == ["import", "scoping", "matching", "export"]

    # report command: prints the path; an unknown run is exit 6
    again = cli("report")
    assert again.exit_code == 0 and again.output.strip() == str(report)
    assert cli("report", "99").exit_code == 6
    status = cli("status", "--json")
    assert status.exit_code == 0
    assert orjson.loads(status.output)["runs"][0]["counts"] == finished["counts"]


def render_dom(report: Path, tmp_path: Path) -> str:
    """The report as headless Chromium renders it (Debian's `chromium`: scripts/test installs
    it when missing, scripts/need-chromium)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium is not installed (scripts/need-chromium installs it, or says how)")
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--dump-dom",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    assert "<svg" in proc.stdout
    return proc.stdout


def test_retention_prunes_old_log_entries_when_a_run_starts(cli: Cli):
    assert cli("sync", "--quiet").exit_code == 0
    with sqlite3.connect(cli.state) as db:
        db.execute("UPDATE log SET at = at - 31 * 86400 WHERE rowid % 2 = 0")
        old = db.execute(
            "SELECT count(*) FROM log WHERE at < ?", (time.time() - 86400,)
        ).fetchone()[0]
    assert old == 120
    assert cli("sync", "--quiet").exit_code == 0
    with sqlite3.connect(cli.state) as db:
        left = db.execute(
            "SELECT count(*) FROM log WHERE at < ?", (time.time() - 86400,)
        ).fetchone()[0]
        first = db.execute("SELECT count(*) FROM log WHERE run_id = 1").fetchone()[0]
    assert left == 0
    assert first == 120  # the first run's recent half stays


def test_plan_writes_nothing_then_apply_runs_exactly_it(cli: Cli, tmp_path):
    plan_file = tmp_path / "plan.json"
    out = cli("plan", "--out", str(plan_file))
    assert out.exit_code == 0, out.output
    plan = orjson.loads(plan_file.read_bytes())
    enabled = sum(1 for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False)
    assert plan["counts"]["create"] == enabled
    assert plan["counts"]["skip"] == 240 - enabled
    assert cli.scim.counters()["by_method"].get("POST", 0) == 0  # nothing written
    creates = [op for op in plan["operations"] if op["action"] == "create"]
    assert sorted(op["scim_id"] for op in creates)[:2] == ["new:1", "new:10"]
    text = plan_file.read_text()
    assert GRAPH_SECRET not in text and SCIM_TOKEN not in text

    out = cli("apply", str(plan_file), "--quiet")
    assert out.exit_code == 0, out.output
    assert cli.scim.counters()["by_method"]["POST"] == enabled
    # the state moved on: the same plan is refused, and nothing is sent
    cli.scim.reset_counters()
    stale = cli("apply", str(plan_file))
    assert stale.exit_code == 7
    assert "state moved on" in stale.output
    assert cli.scim.counters()["total"] == 0

    # a change, a leaver: the plan shows an update and a disable; apply does them
    users = [u for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False]
    cli.tenant.update_user(users[0]["id"], department="Quantum Research")
    cli.tenant.update_user(users[1]["id"], accountEnabled=False)
    assert cli("plan", "--out", str(plan_file)).exit_code == 0
    plan = orjson.loads(plan_file.read_bytes())
    assert {op["action"]: op["graph_id"] for op in plan["operations"]} == {
        "update": users[0]["id"],
        "disable": users[1]["id"],
    }
    update = next(op for op in plan["operations"] if op["action"] == "update")
    assert list(update["changes"].values()) == ["Quantum Research"]
    # the source moves on after the plan: apply refuses and sends nothing
    cli.tenant.update_user(users[2]["id"], department="Elsewhere")
    cli.scim.reset_counters()
    stale = cli("apply", str(plan_file))
    assert stale.exit_code == 7 and "source changed" in stale.output
    assert cli.scim.counters()["total"] == 0
    cli.tenant.update_user(users[2]["id"], department=users[2].get("department"))
    out = cli("apply", str(plan_file), "--json")
    assert out.exit_code == 0, out.output
    finished = events(out.output)[-1]
    assert finished["counts"]["updated"] == 1 and finished["counts"]["disabled"] == 1
    assert cli.scim.counters()["by_method"] == {"PATCH": 2}


def test_apply_holds_back_users_not_in_the_plan(cli: Cli):
    """The guard: what the plan did not show is not sent, even past the upfront check."""
    from bulkprov.config import load_config
    from bulkprov.pipeline.decide import Decision, Engine
    from bulkprov.pipeline.plan import plan_guard

    cfg = load_config(cli.config)
    engine = Engine(cfg)
    user = next(u for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False)
    _, _, _, mapped = engine.evaluate(user)
    guard = plan_guard({"operations": []})
    assert "not in the plan" in (guard(user["id"], Decision("create"), mapped) or "")
    from bulkprov.pipeline.plan import user_fingerprint

    fp = user_fingerprint(user["id"], mapped, "")
    guard = plan_guard(
        {"operations": [{"graph_id": user["id"], "action": "create", "fingerprint": fp}]}
    )
    assert guard(user["id"], Decision("create"), mapped) is None
    assert "changed since the plan" in (
        guard(user["id"], Decision("link", scim_id="x"), mapped) or ""
    )


def test_mapping_test_export_import(cli: Cli, tmp_path):
    user = next(u for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False)
    (tmp_path / "u.json").write_bytes(orjson.dumps(user))
    out = cli("mapping", "test", "--user-json", str(tmp_path / "u.json"), "--json")
    assert out.exit_code == 0, out.output
    values = orjson.loads(out.output)["values"]
    assert values["userName"] == user["userPrincipalName"]
    assert values["active"] is True
    fetched = cli("mapping", "test", "--user", user["userPrincipalName"], "--json")
    assert fetched.exit_code == 0, fetched.output
    assert orjson.loads(fetched.output)["values"] == values
    expr = cli(
        "mapping",
        "test",
        "--user-json",
        str(tmp_path / "u.json"),
        "-e",
        'Join(" ", ToUpper([givenName]), [surname])',
    )
    assert (
        expr.output.strip()
        == orjson.dumps(f"{user['givenName'].upper()} {user['surname']}").decode()
    )
    bad = cli("mapping", "test", "--user-json", str(tmp_path / "u.json"), "-e", "Left([mail], )")
    assert bad.exit_code == 2 and "^" in bad.output
    assert cli("mapping", "test").exit_code == 2  # neither --user nor --user-json

    exported = cli("mapping", "export")
    assert exported.exit_code == 0
    doc = orjson.loads(exported.output)
    by_target = {m["targetAttributeName"]: m for m in doc["attributeMappings"]}
    assert by_target["userName"]["matchingPriority"] == 1
    assert by_target["userName"]["source"]["type"] == "Attribute"
    assert by_target["active"]["source"]["type"] == "Function"
    (tmp_path / "m.json").write_text(exported.output)
    imported = cli("mapping", "import", str(tmp_path / "m.json"), config=False)
    assert imported.exit_code == 0, imported.output
    as_toml = cli("mapping", "export", "--format", "toml")
    assert imported.stdout == as_toml.output
    (tmp_path / "m.toml").write_text(as_toml.output)
    assert cli("mapping", "import", str(tmp_path / "m.toml"), config=False).stdout == as_toml.output
    doc["attributeMappings"][0]["source"] = {"type": "Function", "expression": "Left([mail]"}
    (tmp_path / "bad.json").write_bytes(orjson.dumps(doc))
    bad = cli("mapping", "import", str(tmp_path / "bad.json"), config=False)
    assert bad.exit_code == 2 and "mappings[0].expression" in bad.output


def test_init_and_config_errors(tmp_path):
    runner = Cli(tmp_path / "c.toml", tmp_path / "s", None, None, None)  # type: ignore[arg-type]
    first = runner("init", "--path", str(tmp_path / "c.toml"), config=False)
    assert first.exit_code == 0 and "wrote" in first.output
    again = runner("init", "--path", str(tmp_path / "c.toml"), config=False)
    assert again.exit_code == 2
    missing = runner("status", "-c", str(tmp_path / "nope.toml"), config=False)
    assert missing.exit_code == 2 and "nope.toml" in missing.output
    none_yet = runner("status")
    assert none_yet.exit_code == 0 and "no runs yet" in none_yet.output
    assert runner("logs").exit_code == 6
    assert runner("report").exit_code == 6


class Slow(NoFaults):
    """Hold each SCIM request a little, so a small sync lasts a few progress ticks."""

    async def before(self, req: SimRequest) -> SimResponse | None:
        await asyncio.sleep(0.002)
        return None


def test_sync_json_progress_carries_graph_total_on_a_full_read_only(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(progress, "JSON_TICK", 0.01)
    cli.scim.faults = Slow()
    first = events(cli("sync", "--json").output)
    ticks = [e for e in first if e["event"] == "progress"]
    # set once the read starts: every user Graph lists, in scope or not
    assert {e["total"] for e in ticks} - {None} == {cli.tenant.user_count} == {240}
    assert ticks[-1]["total"] == 240

    # an incremental cycle reads only changes: no total, so no made-up ETA
    again = [e for e in events(cli("sync", "--json").output) if e["event"] == "progress"]
    assert again and {e["total"] for e in again} == {None}
    # --expect still wins when given
    expected = events(cli("sync", "--json", "--expect", "99").output)
    assert {e["total"] for e in expected if e["event"] == "progress"} == {99}


def test_logs_show_the_newest_entries_and_refuse_unknown_filters(cli: Cli):
    """`logs` shows the newest entries by default (issue 20 item 9: after a few runs it
    showed run 1's first 100); unknown --action/--status values are refused, not matched
    against nothing."""
    assert cli("sync", "--quiet").exit_code == 0
    assert cli("sync", "--full", "--quiet").exit_code == 0  # logs every user again, run 2
    entries = [orjson.loads(x) for x in cli("logs", "--json").output.splitlines()]
    assert len(entries) == 100
    assert {e["run_id"] for e in entries} == {2}
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids)  # oldest first among the newest 100
    everything = [
        orjson.loads(x) for x in cli("logs", "--limit", "0", "--json").output.splitlines()
    ]
    assert ids == [e["id"] for e in everything][-100:]
    oldest = [orjson.loads(x) for x in cli("logs", "--oldest", "--json").output.splitlines()]
    assert [e["id"] for e in oldest] == [e["id"] for e in everything][:100]
    for option, value in (("--action", "disabled"), ("--status", "failed"), ("--limit", "-1")):
        bad = cli("logs", option, value)
        assert bad.exit_code == 2, (option, bad.output)
        assert option in bad.output
    assert cli("logs", "--action", "CREATE", "--json").exit_code == 0


def _damage(path: Path) -> bytes:
    """Overwrite pages in the middle of an SQLite file (as a bad disk or a stray dd does)."""
    data = bytearray(path.read_bytes())
    page = 4096
    pages = len(data) // page
    assert pages > 8, pages
    for n in range(pages // 3, 2 * pages // 3):
        data[n * page : (n + 1) * page] = bytes((n * 37 + i) % 251 for i in range(page))
    path.write_bytes(bytes(data))
    return bytes(data)


def test_a_damaged_state_exits_6_naming_the_cause_and_stays_untouched(cli: Cli):
    """Pages overwritten mid-file, or a schema_version that is not a number: `sync` and
    `logs` exit 6 with the cause named, no traceback, the file byte for byte as it was
    (issue 20 item 8)."""
    assert cli("sync", "--quiet").exit_code == 0
    pristine = cli.state.read_bytes()
    assert not Path(f"{cli.state}-wal").exists() or Path(f"{cli.state}-wal").stat().st_size == 0
    damaged = _damage(cli.state)
    for command in (("sync", "--quiet"), ("logs",), ("status",), ("retry-failed", "--quiet")):
        result = cli(*command)
        assert result.exit_code == 6, (command, result.output)
        assert "damaged" in result.output and str(cli.state) in result.output, result.output
        assert "Traceback" not in result.output
        assert cli.state.read_bytes() == damaged, command

    cli.state.write_bytes(pristine)
    con = sqlite3.connect(cli.state)
    con.execute("UPDATE meta SET value='four' WHERE key='schema_version'")
    con.commit()
    con.close()
    edited = cli.state.read_bytes()
    for command in (("sync", "--quiet"), ("logs",)):
        result = cli(*command)
        assert result.exit_code == 6, (command, result.output)
        assert "schema_version is 'four', not a number" in result.output, result.output
        assert cli.state.read_bytes() == edited, command


def test_a_sync_that_held_disables_exits_9(cli: Cli, tmp_path):
    """Held disables are not success (issue 20 item 10): the sync that held them exits 9
    (documented in the README's table and `--help`), the next one with nothing held 0."""
    text = cli.config.read_text()
    assert "threshold = 500" in text
    cli.config.write_text(text.replace("threshold = 500", "threshold = 2"))
    assert cli("sync", "--quiet").exit_code == 0
    for u in [u for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False][:3]:
        cli.tenant.delete_user(u["id"], soft=True)
    held = cli("sync", "--quiet")
    assert held.exit_code == 9, held.output
    assert "threshold" in held.output
    assert cli("sync", "--quiet").exit_code == 0  # nothing new held in this cycle
    assert "| 9 |" in Path("README.md").read_text()
    assert "9 completed but disables/deletes held" in cli("sync", "--help", config=False).output


def test_watch_honours_sync_options(cli: Cli):
    """`sync --watch` honours --metrics-port (one endpoint, up across cycles), --quiet,
    --no-report and --rematch, and refuses --expect (issue 20 item 11: all were dropped)."""
    import os
    import signal
    import socket
    import urllib.request

    refused = cli("sync", "--watch", "--expect", "100")
    assert refused.exit_code == 2 and "--expect" in refused.output
    assert cli("sync", "--quiet", "--no-report").exit_code == 0
    reports = cli.state.with_name(cli.state.name + ".reports")
    before = set(reports.iterdir()) if reports.exists() else set()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli.scim.reset_counters()
    env = {**os.environ, "BULKPROV_GRAPH_SECRET": GRAPH_SECRET, "BULKPROV_SCIM_TOKEN": SCIM_TOKEN}
    argv = ["sync", "-c", str(cli.config), "--watch", "--interval", "0.3s", "--quiet"]
    argv += ["--no-report", "--rematch", "--metrics-port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkprov", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_ids: set[str] = set()
        deadline = time.monotonic() + 30
        while len(run_ids) < 3 and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.05)
                continue
            run_ids.update(re.findall(r"^bulkprov_run_id (\d+)", body, re.MULTILINE))
            time.sleep(0.1)
        assert len(run_ids) >= 3, (run_ids, proc.poll())  # one endpoint, cycle after cycle
        # the first cycle re-matched: it listed the target, the state already being linked
        assert cli.scim.counters()["by_method"].get("GET", 0) >= 1
        changed = next(u for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False)
        cli.tenant.update_user(changed["id"], department="Watched")
        deadline = time.monotonic() + 30
        while (
            cli.scim.find(changed["userPrincipalName"])
            .get("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", {})
            .get("department")
            != "Watched"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    lines = [x for x in out.splitlines() if x.startswith("run ")]
    # --quiet: only the cycles that did something (the update), none of the idle ones
    assert lines and all("updated 1" in x for x in lines), out
    assert "metrics:" not in out
    after = set(reports.iterdir()) if reports.exists() else set()
    assert after == before  # --no-report


class GraphRefuses(NoFaults):
    """Answer ``status`` to every Graph request whose path ends with ``suffix``."""

    def __init__(self, suffix: str, status: int) -> None:
        self.suffix, self.status = suffix, status

    async def before(self, req: SimRequest) -> SimResponse | None:
        if req.path.endswith(self.suffix):
            code = "Request_ResourceNotFound" if self.status == 404 else "Authorization_Denied"
            return json_response(self.status, {"error": {"code": code, "message": "Not Found"}})
        return None


def test_errors_name_the_read_and_the_setting_and_exit_codes_follow_the_table(cli: Cli):
    """A Graph 404 names the URL and the setting that needs it; test-connection probes
    every read a sync makes, so it cannot pass while sync fails; its exit codes and
    provision's follow README's table (issue 20 item 12)."""
    cli.tenant.faults = GraphRefuses("/groups/delta", 404)
    synced = cli("sync", "--quiet")
    assert synced.exit_code == 4, synced.output
    assert f"404 to GET {cli.servers.graph_api_url}/groups/delta" in synced.output
    assert "groups.enabled = true" in synced.output and "GroupMember.Read.All" in synced.output
    checked = cli("test-connection")
    assert checked.exit_code == 4, checked.output
    assert "✗ Graph read" in checked.output and "groups/delta" in checked.output
    cli.tenant.faults = GraphRefuses("/groups/delta", 403)
    checked = cli("test-connection")
    assert checked.exit_code == 3, checked.output  # refused: authentication/permissions
    assert "GroupMember.Read.All" in checked.output
    cli.tenant.faults = None
    ok = cli("test-connection")
    assert ok.exit_code == 0 and "groups and members (groups/delta)" in ok.output

    def run_with(**env: str) -> Any:
        base = {"BULKPROV_GRAPH_SECRET": GRAPH_SECRET, "BULKPROV_SCIM_TOKEN": SCIM_TOKEN}
        argv = ["test-connection", "-c", str(cli.config)]
        return CliRunner().invoke(main, argv, env={**base, **env}, catch_exceptions=False)

    assert run_with(BULKPROV_SCIM_TOKEN="revoked-token").exit_code == 3  # was 5
    assert run_with(BULKPROV_GRAPH_SECRET="wrong-secret").exit_code == 3  # was 4
    unknown = cli("provision", "nobody@corp.example")
    assert unknown.exit_code == 2, unknown.output  # was 1, "unexpected error"
    assert "no user 'nobody@corp.example' in Entra ID" in unknown.output


class RejectDepartment(NoFaults):
    """Refuse every PATCH that changes a department (a target-side mapping problem)."""

    async def before(self, req: SimRequest) -> SimResponse | None:
        if req.method == "PATCH" and b"department" in req.body:
            return scim_error(400, "department is not writable for this account", "mutability")
        return None


def _failed_cycle(cli: Cli, changed: int = 60, removed: int = 10) -> tuple[list, list]:
    """A first sync, then an incremental cycle quarantined by `changed` refused updates,
    with `removed` soft-deleted users whose disables it staged."""
    assert cli("sync", "--quiet").exit_code == 0
    users = [u for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False]
    for u in users[:changed]:
        cli.tenant.update_user(u["id"], department="Moved")
    gone = users[changed : changed + removed]
    for u in gone:
        cli.tenant.delete_user(u["id"], soft=True)
    cli.scim.faults = RejectDepartment()
    failed = cli("sync", "--quiet")
    assert failed.exit_code == 8, failed.output
    assert "quarantined" in failed.output
    assert all(cli.scim.find(u["userPrincipalName"])["active"] for u in gone)  # not yet
    return users[:changed], gone


def test_a_quarantined_cycle_never_locks_the_state(cli: Cli, tmp_path):
    """After a quarantined incremental cycle (issue 20 item 2): `status` says quarantined,
    not interrupted; `plan` works; a rerun does not quarantine again (the reported reason
    no longer stops it), sends the disables the cycle staged and escrows the failures;
    `retry-failed` then retries them all; nothing was sent twice."""
    changed, gone = _failed_cycle(cli)
    status = cli("status")
    assert status.exit_code == 0
    run2 = next(x for x in status.output.splitlines() if x.startswith("run    2"))
    assert "quarantined" in run2 and "interrupted" not in status.output, status.output
    planned = cli("plan", "--out", str(tmp_path / "plan.json"))
    assert planned.exit_code == 0, planned.output
    rerun = cli("sync", "--quiet")
    assert rerun.exit_code == 10, rerun.output  # completed, some users failed
    assert "quarantined" not in rerun.output
    assert not any(cli.scim.find(u["userPrincipalName"])["active"] for u in gone)
    again = cli("sync", "--quiet")  # the failed users wait in escrow: nothing fails now
    assert again.exit_code == 0, again.output
    cli.scim.faults = None  # the cause fixed
    retried = cli("retry-failed", "--quiet")
    assert retried.exit_code == 0, retried.output
    ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    assert all(cli.scim.find(u["userPrincipalName"])[ext]["department"] == "Moved" for u in changed)
    assert cli.scim.counters()["duplicate_posts"] == {}
    status = cli("status", "--json")
    doc = orjson.loads(status.output)
    assert [r["status"] for r in doc["runs"]][:2] == ["completed", "completed"]
    assert doc["quarantine"] == []  # no failure, nothing in escrow: out of quarantine


def test_full_and_approve_work_after_a_failed_cycle(cli: Cli, tmp_path):
    """`sync --full` and `approve` after a failed cycle (issue 20 item 2: `sync --full`
    refused with "run 2 was interrupted", exit 6, until the state was deleted)."""
    text = cli.config.read_text()
    cli.config.write_text(text.replace("threshold = 500", "threshold = 3"))
    users = [u for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False]
    assert cli("sync", "--quiet").exit_code == 0
    held = users[-5:]
    for u in held:
        cli.tenant.delete_user(u["id"], soft=True)
    assert cli("sync", "--quiet").exit_code == 9  # 5 disables held behind the threshold
    for u in users[:60]:
        cli.tenant.update_user(u["id"], department="Moved")
    cli.scim.faults = RejectDepartment()
    assert cli("sync", "--quiet").exit_code == 8  # run 3 quarantined
    approved = cli("approve", "--yes")
    assert approved.exit_code == 0, approved.output
    assert "disabled 5" in approved.output
    assert not any(cli.scim.find(u["userPrincipalName"])["active"] for u in held)
    cli.scim.faults = None
    full = cli("sync", "--full", "--quiet")
    assert full.exit_code == 0, full.output  # the escrowed users wait: no failure
    assert "run 4" in full.output
    status = cli("status")
    assert "abandoned" in status.output and "interrupted" not in status.output
    assert cli("retry-failed", "--quiet").exit_code == 0
    ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    assert all(
        cli.scim.find(u["userPrincipalName"])[ext]["department"] == "Moved" for u in users[:60]
    )


def test_status_calls_a_live_run_in_progress(cli: Cli):
    """A run whose sync holds the state is "in progress", never "interrupted"."""
    from bulkprov.checkpoint.lock import StateLock

    cli.tenant.faults = GraphRefuses("/users/delta", 404)
    assert cli("sync", "--quiet").exit_code == 4  # run 1 stays unfinished
    cli.tenant.faults = None
    assert "interrupted: `bulkprov sync` resumes it" in cli("status").output
    with StateLock(cli.state):
        held = cli("status")
        assert "(in progress)" in held.output and "interrupted" not in held.output
        assert orjson.loads(cli("status", "--json").output)["live"] is True
    assert cli("sync", "--quiet").exit_code == 0


def test_retry_failed_right_after_a_quarantined_cycle(cli: Cli):
    """`retry-failed` straight after a quarantined incremental cycle retries every failed
    user and completes the cycle (its staged disables sent): the quarantined run is not
    resumed past the users it had already failed."""
    changed, gone = _failed_cycle(cli)
    cli.scim.faults = None
    retried = cli("retry-failed", "--quiet")
    assert retried.exit_code == 0, retried.output
    ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    assert all(cli.scim.find(u["userPrincipalName"])[ext]["department"] == "Moved" for u in changed)
    assert not any(cli.scim.find(u["userPrincipalName"])["active"] for u in gone)
    assert orjson.loads(cli("status", "--json").output)["quarantine"] == []
