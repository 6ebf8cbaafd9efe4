"""`bulkprov status --check` and the health metrics (issue 15 item 4): each unhealthy case
with its documented exit code, against a real state made by real syncs."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import httpx
import orjson
from click.testing import CliRunner

from bulkprov.checkpoint.lock import StateLock
from bulkprov.cli import main
from bulkprov.observe import health

from .cli_support import Cli, cli_fixture  # noqa: F401 - the `cli` fixture
from .test_cli_ops import GraphRefuses, _failed_cycle

ROOT = Path(__file__).resolve().parent.parent


def check(cli: Cli, *args: str) -> tuple[int, str, dict]:
    """`status --check` (text) and `status --check --json`: exit code, text, document."""
    text = cli("status", "--check", *args)
    doc = cli("status", "--check", "--json", *args)
    assert text.exit_code == doc.exit_code
    return text.exit_code, text.output, orjson.loads(doc.output)


def test_no_state_yet_is_unhealthy_and_creates_nothing(cli: Cli):
    code, out, doc = check(cli)
    assert code == health.EXIT_STALE == 13, out
    assert "no cycle has completed yet" in out
    assert doc["problems"][0]["kind"] == "stale" and doc["healthy"] is False
    assert not cli.state.exists()  # a probe never creates the state


def test_a_completed_cycle_is_healthy_until_it_is_older_than_max_age(cli: Cli):
    assert cli("sync", "--quiet").exit_code == 0
    code, out, doc = check(cli, "--max-age", "2h")
    assert code == 0, out
    assert out.startswith("healthy: last completed cycle: run 1,")
    assert doc == {
        "healthy": True,
        "exit_code": 0,
        "problems": [],
        "live": False,
        "last_success": doc["last_success"],
        "held": 0,
        "escrowed": 0,
        "quarantine": [],
    }
    assert time.time() - doc["last_success"] < 60
    # three hours later (the cycle's end moved back: the cron job stopped running)
    with sqlite3.connect(cli.state) as con:
        con.execute("UPDATE runs SET finished_at = finished_at - 3 * 3600")
    code, out, _ = check(cli, "--max-age", "2h")
    assert code == 13, out
    assert "ended 3.0h ago, more than --max-age 2.0h" in out
    assert check(cli, "--max-age", "4h")[0] == 0
    assert check(cli)[0] == 0  # without --max-age only "never completed" counts


def test_a_failed_run_is_unhealthy_while_nothing_runs(cli: Cli):
    """A run that stopped on an error (here Graph refused a read: sync exit 4) → 12, until
    a sync completes; while a sync holds the state the same run is in progress: healthy."""
    assert cli("sync", "--quiet").exit_code == 0
    cli.tenant.faults = GraphRefuses("/users/delta", 404)
    assert cli("sync", "--quiet").exit_code == 4
    code, out, doc = check(cli, "--max-age", "2h")
    assert code == health.EXIT_STOPPED == 12, out
    assert "run 2 stopped before its end" in out and "users/delta" in out
    assert [p["kind"] for p in doc["problems"]] == ["stopped"]
    with StateLock(cli.state):  # a sync in progress
        code, out, doc = check(cli, "--max-age", "2h")
        assert code == 0 and doc["live"] is True, out
        assert "a sync is running" in out
    cli.tenant.faults = None
    assert cli("sync", "--quiet").exit_code == 0
    assert check(cli, "--max-age", "2h")[0] == 0


def test_a_killed_first_run_is_unhealthy_but_a_running_one_is_not(cli: Cli):
    """What SIGKILL leaves (a run row still "running", no lock): 12 with "killed"; the
    first cycle while it runs (no completed cycle yet) is healthy."""
    assert cli("sync", "--quiet").exit_code == 0
    with sqlite3.connect(cli.state) as con:
        con.execute("DELETE FROM runs")
        con.execute(
            "INSERT INTO runs(started_at, status, counts, kind) VALUES(?, 'running', '{}', 'full')",
            (time.time(),),
        )
    code, out, doc = check(cli)
    assert code == 12, out
    assert "(killed)" in out and "resumes it" in out
    assert [p["kind"] for p in doc["problems"]] == ["stopped", "stale"]
    with StateLock(cli.state):
        code, out, _ = check(cli, "--max-age", "2h")
        assert code == 0, out


def test_held_actions_are_unhealthy_until_approved(cli: Cli, monkeypatch):
    """The threshold is set through the environment (BULKPROV_DEPROVISION__THRESHOLD)."""
    env = {"BULKPROV_DEPROVISION__THRESHOLD": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert cli("sync", "--quiet").exit_code == 0
    for u in [u for u in cli.tenant.iter_users() if u.get("accountEnabled") is not False][:3]:
        cli.tenant.delete_user(u["id"], soft=True)
    assert cli("sync", "--quiet").exit_code == 9
    code, out, doc = check(cli, "--max-age", "2h")
    assert code == health.EXIT_HELD == 9, out
    assert "3 disable/delete action(s) wait for approval" in out
    assert doc["held"] == 3
    metrics = cli("status", "--metrics")
    assert metrics.exit_code == 0
    assert "\nbulkprov_held_actions 3\n" in metrics.output + "\n"
    assert cli("approve", "--yes").exit_code == 0
    assert check(cli, "--max-age", "2h")[0] == 0


def test_a_quarantined_run_is_unhealthy_and_wins(cli: Cli):
    """Quarantined (8) comes first; the cycle also staged disables, but held ones only
    count once the threshold held them, so 8 is the only problem here."""
    _failed_cycle(cli)
    code, out, doc = check(cli, "--max-age", "2h")
    assert code == health.EXIT_QUARANTINED == 8, out
    assert "run 2 was quarantined" in out and "bulkprov report 2" in out
    assert doc["problems"][0]["kind"] == "quarantined"
    assert doc["quarantine"]  # the reasons it reported
    metrics = cli("status", "--metrics").output
    assert "\nbulkprov_quarantined 1\n" in metrics
    # the next sync goes on past the reported reason: completed (with failures) → healthy,
    # though the state stays in quarantine (and its gauge at 1) until a clean cycle
    assert cli("sync", "--quiet").exit_code == 10
    code, out, doc = check(cli, "--max-age", "2h")
    assert code == 0, out
    assert "user(s) in escrow" in out and doc["escrowed"] > 0
    assert "\nbulkprov_escrowed_users " in cli("status", "--metrics").output


def test_problems_come_in_the_documented_order():
    """The first that applies wins: 8, 12, 9, 13 (the docstring's table, the docs')."""
    from bulkprov.checkpoint.health import LastRun, StateHealth

    now = 1_000_000.0
    last = LastRun(7, "quarantined", "incremental", now - 10, None, "too many failures", {})
    state = StateHealth(now - 99_999, 6, last, 4, 2, ("x",))
    kinds = [p.kind for p in health.check(state, now=now, max_age=3600, live=False)]
    assert kinds == ["quarantined", "held", "stale"]
    stopped = StateHealth(
        now - 99_999, 6, LastRun(7, "running", "full", 0, None, None, {}), 4, 0, ()
    )
    codes = [p.exit_code for p in health.check(stopped, now=now, max_age=3600, live=False)]
    assert codes == [12, 9, 13]
    doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for code, kind in ((8, "quarantined"), (12, "stopped"), (9, "held"), (13, "stale")):
        assert re.search(rf"\| {code} \| {kind} \|", doc), (code, kind)


def test_max_age_needs_check_and_a_duration(cli: Cli):
    assert cli("status", "--max-age", "2h").exit_code == 2
    bad = cli("status", "--check", "--max-age", "soon")
    assert bad.exit_code == 2 and "not a duration" in bad.output


async def test_the_sync_serves_the_health_gauges(servers, tmp_path):
    """`sync --metrics-port`: the gauges are read when the run starts and when it ends."""
    from bulkprov.observe.metrics import MetricsServer
    from bulkprov.pipeline import RunStats, run_sync

    from .conftest import SECRETS, make_config

    cfg = make_config(servers, tmp_path / "state.sqlite3")
    stats = RunStats()
    async with MetricsServer(stats, lambda: 0.0) as server:
        before = time.time()
        await run_sync(cfg, SECRETS, stats=stats)
        async with httpx.AsyncClient(trust_env=False) as client:
            text = (await client.get(server.url)).text
    values = dict(
        line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(values["bulkprov_last_success_timestamp_seconds"]) >= before
    assert values["bulkprov_held_actions"] == "0"
    assert values["bulkprov_escrowed_users"] == "0"
    assert values["bulkprov_quarantined"] == "0"


def test_status_check_is_in_the_help(tmp_path):
    out = CliRunner().invoke(main, ["status", "--help"]).output
    assert "--check" in out and "--max-age" in out and "--metrics" in out
