"""SIGTERM/SIGINT: in-flight requests finish, the checkpoint is flushed, exit within 5 s."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from bulkprov.commands.demo import write_demo_config
from bulkprov.config import load_config
from bulkprov.sim.server import SimulatorProcess
from bulkprov.sim.users import generate_user

from .e2e import expected_values, store_problems

USERS = 1500
SEED = 31
TOKEN = "shutdown-test-scim-token"
SECRET = "shutdown-test-graph-secret"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_finishes_in_flight_flushes_and_resumes(tmp_path, signum):
    env = dict(os.environ, BULKPROV_GRAPH_SECRET=SECRET, BULKPROV_SCIM_TOKEN=TOKEN)
    # 40 ms per SCIM request: plenty of requests are in flight when the signal lands
    args = [
        "--users",
        str(USERS),
        "--seed",
        str(SEED),
        "--scim-token",
        TOKEN,
        "--graph-secret",
        SECRET,
        "--latency-ms",
        "40",
    ]
    with SimulatorProcess(args) as servers:
        sim_info = {**servers.as_json()}
        config, state = tmp_path / "bulkprov.toml", tmp_path / "state.sqlite3"
        write_demo_config(config, sim_info, state, concurrency=16)
        control = servers.scim_control_url
        cmd = [sys.executable, "-m", "bulkprov", "sync", "-c", str(config), "--quiet"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while httpx.get(f"{control}/_sim/counters", trust_env=False).json()["posts"] < 200:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - sent
        assert took < 5.0, f"took {took:.2f}s to stop"
        assert proc.returncode == 130, err
        assert b"interrupted by" in err and b"resume" in err
        counters = httpx.get(f"{control}/_sim/counters", trust_env=False).json()
        assert 0 < counters["users"] < USERS * 0.9
        # every POST that reached the target has its outcome in the state: in-flight
        # requests were finished and flushed, not abandoned
        con = sqlite3.connect(state)
        logged = con.execute(
            "SELECT count(*) FROM log WHERE action='create' AND status='success'"
        ).fetchone()[0]
        assert con.execute("SELECT status FROM runs").fetchall() == [("running",)]
        con.close()
        assert logged == counters["posts"] == counters["users"]

        done = subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        store = httpx.get(f"{control}/_sim/store", trust_env=False, timeout=60).json()
        counters = httpx.get(f"{control}/_sim/counters", trust_env=False).json()
    cfg = load_config(config)
    expected = expected_values(cfg, (generate_user(i, SEED) for i in range(USERS)))
    assert store_problems(expected, store) == []
    assert counters["duplicate_posts"] == {}
