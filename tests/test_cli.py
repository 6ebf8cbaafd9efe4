"""The command line: exit codes and output of init, sync, status, logs and demo."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from bulkprov.cli import main


def test_init_writes_a_valid_starter(tmp_path):
    path = tmp_path / "zoom.toml"
    result = CliRunner().invoke(main, ["init", "--path", str(path)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and path.exists()
    again = CliRunner().invoke(main, ["init", "--path", str(path)])
    assert again.exit_code == 2 and "exists" in again.output


def test_config_error_exit_code_and_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[graph]\ntenant_id = 1\n")
    result = CliRunner().invoke(main, ["status", "-c", str(bad)])
    assert result.exit_code == 2
    assert str(bad) in result.output and "graph.tenant_id" in result.output


def test_missing_secret_is_exit_2_naming_the_variable(tmp_path, monkeypatch):
    from bulkprov.commands.starter import STARTER_TOML

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        STARTER_TOML.replace('path = "bulkprov-state.sqlite3"', f'path = "{tmp_path / "s.db"}"')
    )
    monkeypatch.delenv("BULKPROV_GRAPH_SECRET", raising=False)
    result = CliRunner().invoke(main, ["sync", "-c", str(cfg), "--quiet"])
    assert result.exit_code == 2
    assert "BULKPROV_GRAPH_SECRET" in result.output


def test_status_without_runs(tmp_path):
    from bulkprov.commands.starter import STARTER_TOML

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        STARTER_TOML.replace('path = "bulkprov-state.sqlite3"', f'path = "{tmp_path / "s.db"}"')
    )
    result = CliRunner().invoke(main, ["status", "-c", str(cfg)])
    assert result.exit_code == 0 and "no runs yet" in result.output


@pytest.mark.slow
def test_demo_runs_end_to_end_and_checks_itself(tmp_path):
    """`bulkprov demo`: simulators, sync, SIGINT, resume, verification — as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "bulkprov", "demo", "--users", "3000", "--workdir", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "interrupting the sync (SIGINT)" in out and "resuming" in out
    assert "missing: 0   duplicates: 0   extra: 0   wrong attributes: 0" in out
    assert "demo PASSED" in out


def test_full_is_for_one_run_not_watch(tmp_path):
    from bulkprov.commands.starter import STARTER_TOML

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        STARTER_TOML.replace('path = "bulkprov-state.sqlite3"', f'path = "{tmp_path / "s.db"}"')
    )
    result = CliRunner().invoke(main, ["sync", "-c", str(cfg), "--full", "--watch"])
    assert result.exit_code == 2
    assert "--full is for one run" in result.output


def test_sim_writes_a_ready_config_and_calls_itself_bulkprov_sim(tmp_path, monkeypatch):
    """`bulkprov sim --config-out FILE` writes a config that `bulkprov sync -c FILE` runs
    against the simulators it started, with no secret in it; its --help says `bulkprov sim`
    (issue 20 item 13)."""
    import os
    import signal
    import time

    helped = subprocess.run(
        [sys.executable, "-m", "bulkprov", "sim", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: bulkprov sim") and "--config-out" in helped.stdout
    assert "python -m bulkprov.sim" not in helped.stdout

    config = tmp_path / "sim.toml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkprov", "sim", "--users", "60", "--config-out", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not config.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert config.exists(), proc.stderr.read() if proc.poll() is not None else "no config"
        text = config.read_text()
        assert "sim-graph-secret" not in text and "sim-scim-token" not in text
        assert (os.stat(f"{config}.scim-token").st_mode & 0o777) == 0o600
        monkeypatch.delenv("BULKPROV_GRAPH_SECRET", raising=False)
        monkeypatch.delenv("BULKPROV_SCIM_TOKEN", raising=False)
        monkeypatch.chdir(tmp_path.parent)  # the state goes beside the config, not here
        result = CliRunner().invoke(main, ["sync", "-c", str(config), "--quiet", "--no-report"])
        assert result.exit_code == 0, result.output
        assert "created" in result.output
        assert (tmp_path / "sim.toml.state.sqlite3").exists()
        again = subprocess.run(
            [sys.executable, "-m", "bulkprov", "sim", "--config-out", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert again.returncode == 2 and "exists" in again.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
