"""End-to-end throughput of ``bulkprov sync`` against the loopback simulators.

Each scenario (``benchmarks/cases/*.json``) starts the simulators in one subprocess and runs
``bulkprov sync`` in another, so client and server each have a core. Reported per run:
users/s, SCIM requests per user (from the simulator's counters), the sync process's CPU time
per user (µs, from ``wait4`` rusage: user + system), its peak RSS, and 429s seen.

    python -m benchmarks.bench_pipeline --cases benchmarks/cases/first.json [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bulkprov.demo import GRAPH_SECRET_ENV, SCIM_TOKEN_ENV, write_demo_config
from bulkprov.sim.server import SimulatorProcess

HERE = Path(__file__).parent


def counters(scim_url: str) -> dict[str, Any]:
    base = scim_url.rsplit("/scim2", 1)[0]
    return httpx.get(f"{base}/_sim/counters", timeout=30, trust_env=False).json()


def run_sync(config: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one sync as a child; return its final event plus CPU and RSS from wait4."""
    cmd = [sys.executable, "-m", "bulkprov", "sync", "-c", str(config), "--json"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    final: dict[str, Any] = {}
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "finished":
            final = event
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 10):
        raise SystemExit(f"sync failed with exit code {proc.returncode}")
    final["wall"] = wall
    final["cpu"] = usage.ru_utime + usage.ru_stime
    final["rss_mb"] = usage.ru_maxrss / 1024
    return final


def scenario(case: dict[str, Any]) -> list[dict[str, Any]]:
    token, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = dict(os.environ, **{GRAPH_SECRET_ENV: secret, SCIM_TOKEN_ENV: token})
    args = [
        "--users",
        str(case["users"]),
        "--seed",
        "11",
        "--scim-token",
        token,
        "--graph-secret",
        secret,
        "--latency-ms",
        str(case.get("latency_ms", 0)),
    ]
    if case.get("sim_rate_limit"):
        args += ["--rate-limit", str(case["sim_rate_limit"])]
        if case.get("sim_no_retry_after"):
            args.append("--no-retry-after")
    sim = SimulatorProcess(args)
    sim.start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "bench.toml"
            write_demo_config(
                cfg,
                sim.info,
                Path(tmp) / "state.sqlite3",
                case["concurrency"],
                case.get("rate_limit", 0),
            )
            for i in range(case.get("runs", 1)):
                before = counters(sim.info["scim_url"])
                result = run_sync(cfg, env)
                after = counters(sim.info["scim_url"])
                users = sum(result["counts"].values())
                scim_requests = after["total"] - before["total"]
                rows.append(
                    {
                        "case": case["name"]
                        + (f" (run {i + 1})" if case.get("runs", 1) > 1 else ""),
                        "users": users,
                        "seconds": round(result["wall"], 2),
                        "users_per_s": round(users / result["wall"], 1),
                        "requests_per_user": round(scim_requests / users, 4) if users else 0,
                        "cpu_us_per_user": round(result["cpu"] / users * 1e6, 1) if users else 0,
                        "peak_rss_mb": round(result["rss_mb"], 1),
                        "throttled_429": after.get("throttled", 0) - before.get("throttled", 0),
                        "counts": {k: v for k, v in result["counts"].items() if v},
                    }
                )
    finally:
        sim.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=HERE / "cases" / "first.json")
    ap.add_argument("--only", action="append", default=[], help="run only this case (repeatable)")
    ap.add_argument("--users", type=int, default=None, help="override every case's user count")
    args = ap.parse_args(argv)
    cases = json.loads(args.cases.read_text())
    print(
        f"# machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print("| case | users | s | users/s | requests/user | CPU µs/user | peak RSS MB | 429s |")
    print("|---|---|---|---|---|---|---|---|")
    for case in cases:
        if args.only and case["name"] not in args.only:
            continue
        if args.users:
            case["users"] = args.users
        for r in scenario(case):
            print(
                f"| {r['case']} | {r['users']:,} | {r['seconds']} | {r['users_per_s']:,} | "
                f"{r['requests_per_user']} | {r['cpu_us_per_user']} | {r['peak_rss_mb']} | "
                f"{r['throttled_429']} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
