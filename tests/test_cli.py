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
