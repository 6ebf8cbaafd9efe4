"""Restart after SIGKILL: how long from the new process's start to its first create.

Starts the simulators in a subprocess, runs ``bulkprov sync`` into them, SIGKILLs it once
``--kill-at`` of the users are created, then starts ``bulkprov sync`` again and samples the
SCIM simulator's counters every few milliseconds: the time to the first request, to the
first create (a ``201``), the listing pages and filter lookups the resume sent, and (with
``--finish``) that every user ended exactly once.

    python -m benchmarks.bench_resume --users 1000000 --kill-at 0.5 --finish

Run from another tree (``cd /tmp/old && python -m benchmarks.bench_resume``) to measure that
tree's ``bulkprov``: the child processes import ``bulkprov`` from the working directory.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bulkprov.commands.demo import GRAPH_SECRET_ENV, SCIM_TOKEN_ENV, write_demo_config
from bulkprov.sim.server import SimulatorProcess


def counters(control: str) -> dict[str, Any]:
    r = httpx.get(f"{control}/_sim/counters", trust_env=False, timeout=60)
    r.raise_for_status()
    return dict(r.json())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--kill-at", type=float, default=0.5, help="fraction of users created")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rate-limit", type=float, default=0, help="client-side req/s (0: none)")
    p.add_argument("--page-size", type=int, default=999)
    p.add_argument("--finish", action="store_true", help="let the resume finish and check it")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--json", default=None, help="also append the row to this JSONL file")
    args = p.parse_args()

    token, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = dict(os.environ, **{GRAPH_SECRET_ENV: secret, SCIM_TOKEN_ENV: token})
    sim = SimulatorProcess(
        [
            "--users",
            str(args.users),
            "--seed",
            str(args.seed),
            "--scim-token",
            token,
            "--graph-secret",
            secret,
            "--no-track-posts",
        ]
    )
    servers = sim.start()
    control = servers.scim_control_url
    assert control is not None
    row: dict[str, Any] = {"users": args.users, "kill_at": args.kill_at, "tree": os.getcwd()}
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        config, state = Path(tmp) / "bulkprov.toml", Path(tmp) / "state.sqlite3"
        write_demo_config(
            config,
            sim.info,
            state,
            concurrency=args.concurrency,
            rate_limit=args.rate_limit,
            page_size=args.page_size,
        )
        cmd = [sys.executable, "-m", "bulkprov", "sync", "-c", str(config), "--quiet"]
        try:
            first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
            target = int(args.users * args.kill_at)
            started = time.perf_counter()
            while counters(control)["users"] < target:
                if first.poll() is not None:
                    raise SystemExit(f"the first sync ended early: {first.stderr.read()!r}")
                time.sleep(0.05)
            first.send_signal(signal.SIGKILL)
            first.communicate()
            before = counters(control)
            row["killed_after_s"] = round(time.perf_counter() - started, 1)
            row["created_before_kill"] = before["users"]
            row["state_mb"] = round(state.stat().st_size / 1e6, 1)
            httpx.post(f"{control}/_sim/reset_counters", trust_env=False, timeout=60)

            t0 = time.perf_counter()
            resume = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
            first_request = first_create = None
            while first_create is None:
                c = counters(control)
                now = time.perf_counter() - t0
                if first_request is None and c["total"] > 0:
                    first_request = now
                if c["statuses"].get("201", 0) > 0 or c.get("bulk_operations", 0) > 0:
                    first_create = now
                if resume.poll() is not None:
                    break
                time.sleep(0.005)
            c = counters(control)
            row["restart_to_first_request_s"] = round(first_request or -1, 3)
            row["restart_to_first_create_s"] = round(first_create or -1, 3)
            row["list_pages_before_first_create"] = c.get("lists", {}).get("page", 0)
            if args.finish:
                _, err = resume.communicate()
                row["resume_exit"] = resume.returncode
                row["resume_s"] = round(time.perf_counter() - t0, 1)
                done = counters(control)
                row["resume_list_pages"] = done.get("lists", {}).get("page", 0)
                row["resume_filter_lookups"] = done.get("lists", {}).get("filter", 0)
                row["resume_requests"] = done["total"]
                row["users_in_target"] = done["users"]
                # userName is unique in the simulator: a second POST of a user answers 409
                row["conflicts_409"] = done["statuses"].get("409", 0)
                if resume.returncode:
                    row["error"] = err.decode()[-2000:]
            else:
                resume.send_signal(signal.SIGINT)
                resume.communicate()
        finally:
            sim.stop()
    print(json.dumps(row, indent=1))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
