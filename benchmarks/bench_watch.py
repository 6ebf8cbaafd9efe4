"""``sync --watch``: how long from a user's disable in Graph to ``active=false`` in the target.

Starts the simulators in a subprocess, runs the initial sync, then ``bulkprov sync --watch
--interval 30s`` and, ``--trials`` times at random moments, disables one user in the Graph
simulator (its control endpoint) and polls the SCIM service (``GET /Users?filter=userName eq
…``, every 100 ms) until that account reads ``active: false``. Entra's cycle is 40 minutes.

    python -m benchmarks.bench_watch --users 100000 --trials 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bulkprov.commands.demo import GRAPH_SECRET_ENV, SCIM_TOKEN_ENV, write_demo_config
from bulkprov.sim.server import SimulatorProcess
from bulkprov.sim.users import generate_user


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--interval", default="30s")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--json", default=None, help="also append the row to this JSONL file")
    args = p.parse_args()

    token, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = dict(os.environ, **{GRAPH_SECRET_ENV: secret, SCIM_TOKEN_ENV: token})
    sim = SimulatorProcess(
        [
            *("--users", str(args.users), "--seed", str(args.seed)),
            *("--scim-token", token, "--graph-secret", secret, "--no-track-posts"),
        ]
    )
    servers = sim.start()
    rng = random.Random(args.seed)
    latencies: list[float] = []
    row: dict[str, Any] = {"users": args.users, "interval": args.interval}
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        config, state = Path(tmp) / "bulkprov.toml", Path(tmp) / "state.sqlite3"
        write_demo_config(config, sim.info, state, concurrency=args.concurrency)
        base = [sys.executable, "-m", "bulkprov", "sync", "-c", str(config), "--quiet"]
        t = time.perf_counter()
        subprocess.run(base, env=env, check=True)
        row["initial_sync_s"] = round(time.perf_counter() - t, 1)
        watch = subprocess.Popen([*base, "--watch", "--interval", args.interval], env=env)
        scim = httpx.Client(
            base_url=str(servers.scim_url),
            headers={"Authorization": f"Bearer {token}"},
            trust_env=False,
            timeout=30,
        )
        graph = httpx.Client(base_url=str(servers.graph_url), trust_env=False, timeout=30)
        try:
            time.sleep(5)  # the watch's first cycle (nothing changed) is under way
            picked = rng.sample(range(args.users), args.trials * 3)
            for index in picked:
                if len(latencies) == args.trials:
                    break
                user = generate_user(index, args.seed)
                if user.get("accountEnabled") is False:
                    continue
                time.sleep(rng.uniform(0, 30))  # a random moment of the interval
                graph.patch(f"/_sim/users/{user['id']}", json={"accountEnabled": False})
                t0 = time.perf_counter()
                query = {"filter": f'userName eq "{user["userPrincipalName"]}"'}
                while True:
                    found = scim.get("/Users", params=query).json()["Resources"]
                    if found and found[0].get("active") is False:
                        break
                    if time.perf_counter() - t0 > 600 or watch.poll() is not None:
                        raise SystemExit("the disable never arrived")
                    time.sleep(0.1)
                latencies.append(time.perf_counter() - t0)
                print(f"disable → active=false in {latencies[-1]:.1f} s", flush=True)
        finally:
            watch.send_signal(signal.SIGINT)
            watch.wait(30)
            sim.stop()
    row["disable_to_inactive_s"] = [round(x, 1) for x in latencies]
    row["max_s"] = round(max(latencies), 1)
    row["median_s"] = round(statistics.median(latencies), 1)
    print(json.dumps(row, indent=1))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
