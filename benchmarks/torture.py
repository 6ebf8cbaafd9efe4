"""Torture: SIGKILL ``bulkprov sync`` at random moments, resume until done, then check exactly.

    python -m benchmarks.torture --users 20000 --kills 50        # scripts/torture
    python -m benchmarks.torture --users 5000 --kills 10 --faults 0.02

The simulators run in their own process (they outlive the kills); each sync is a real
``bulkprov sync`` subprocess (the kill loop is tests/test_kill_resume.py's
``run_with_kills``). At the end the SCIM store must equal the mapping's output for every
in-scope user — 0 duplicates, 0 missing, 0 wrong attributes, no userName POSTed twice — and
the state must agree: one link per user to the right account, a success logged for every
user and at most one successful create per user across all the resumed runs.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bulkprov.commands.demo import write_demo_config
from bulkprov.config import load_config
from bulkprov.sim.server import SimulatorProcess
from bulkprov.sim.users import generate_user
from tests.e2e import expected_values, store_problems
from tests.test_kill_resume import run_with_kills

TOKEN = "torture-scim-token"
SECRET = "torture-graph-secret"


def torture(
    users: int, kills: int, *, seed: int = 7, rate_limit: float = 400, workdir: Path
) -> dict[str, Any]:
    """Run the torture; return figures and ``problems`` (empty when everything is exact)."""
    env = dict(os.environ, BULKPROV_GRAPH_SECRET=SECRET, BULKPROV_SCIM_TOKEN=TOKEN)
    args = ["--users", str(users), "--seed", str(seed), "--scim-token", TOKEN]
    args += ["--graph-secret", SECRET]
    started = time.monotonic()
    with SimulatorProcess(args) as servers:
        info = servers.as_json()
        config, state = workdir / "bulkprov.toml", workdir / "state.sqlite3"
        write_demo_config(config, info, state, concurrency=8, rate_limit=rate_limit, page_size=250)
        control = servers.scim_control_url
        assert control is not None
        mid, total = run_with_kills(config, env, control, kills=kills, seed=seed, users=users)
        store = httpx.get(f"{control}/_sim/store", trust_env=False, timeout=120).json()
        counters = httpx.get(f"{control}/_sim/counters", trust_env=False, timeout=60).json()
    cfg = load_config(config)
    expected = expected_values(cfg, (generate_user(i, seed) for i in range(users)))
    problems = store_problems(expected, store)
    problems += [f"POSTed {n}x: {name}" for name, n in counters["duplicate_posts"].items()]
    problems += state_problems(state, store, set(expected))
    if mid < kills:
        problems.append(f"only {mid} of {kills} kills landed mid-run")
    return {
        "users": users,
        "in_scope": len(expected),
        "kills_mid_run": mid,
        "kills": total,
        "seconds": round(time.monotonic() - started, 1),
        "requests": counters["total"],
        "problems": problems,
    }


def state_problems(state: Path, store: list[dict[str, Any]], expected: set[str]) -> list[str]:
    """Where the state database disagrees with the target."""
    problems: list[str] = []
    ids = {str(r["userName"]).lower(): r["id"] for r in store}
    con = sqlite3.connect(state)
    try:
        linked = {
            str(name).lower(): scim_id
            for name, scim_id in con.execute(
                "SELECT user_name, scim_id FROM users WHERE scim_id IS NOT NULL"
            )
        }
        if linked != ids:
            wrong = {k for k in linked.keys() | ids.keys() if linked.get(k) != ids.get(k)}
            problems.append(f"state links differ from the target for {len(wrong)} user(s)")
        logged = {
            str(n).lower()
            for (n,) in con.execute("SELECT DISTINCT user_name FROM log WHERE status='success'")
        }
        problems += [f"no success logged: {n}" for n in sorted(expected - logged)[:20]]
        creates = Counter(
            str(n).lower()
            for (n,) in con.execute(
                "SELECT user_name FROM log WHERE action='create' AND status='success'"
            )
        )
        problems += [f"logged as created {c}x: {n}" for n, c in creates.items() if c > 1]
        failures = con.execute("SELECT count(*) FROM log WHERE status='failure'").fetchone()[0]
        if failures:
            problems.append(f"{failures} failure(s) logged")
        runs = con.execute("SELECT status FROM runs").fetchall()
        if runs != [("completed",)]:
            problems.append(f"runs: {runs}")
    finally:
        con.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.torture", description=__doc__)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate-limit", type=float, default=None, help="client req/s (default: scaled)")
    args = p.parse_args(argv)
    # slow enough that every kill lands mid-run: about 0.8 users of work per kill-second
    rate = args.rate_limit or max(200.0, args.users / (args.kills * 0.9))
    with tempfile.TemporaryDirectory(prefix="bulkprov-torture-") as tmp:
        result = torture(args.users, args.kills, seed=args.seed, rate_limit=rate, workdir=Path(tmp))
    for key, value in result.items():
        if key != "problems":
            print(f"{key}: {value}")
    for problem in result["problems"][:50]:
        print(f"PROBLEM: {problem}")
    print("OK: exact" if not result["problems"] else f"FAILED: {len(result['problems'])} problems")
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
