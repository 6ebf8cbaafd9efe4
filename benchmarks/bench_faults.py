"""Fault soak: the same sync with 10 % injected faults of every kind, against a fault-free run.

    python -m benchmarks.bench_faults [--users 5000] [--rate 0.1]

Both simulators run in a child process with ``--faults``/``--graph-faults`` (every kind of
:mod:`bulkprov.sim.faults` but ``401``, which stops a run by design and is tested apart);
``bulkprov sync`` runs as another child, then ``bulkprov retry-failed`` while users remain in
escrow. Reported: wall time to 100 % of users completed, rounds, requests, and whether the
target is exact (0 duplicates, 0 missing, 0 wrong attributes). Appends nothing by itself:
copy the table into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bulkprov.commands.demo import write_demo_config
from bulkprov.config import load_config
from bulkprov.sim.faults import GRAPH_KINDS, SOAK_KINDS
from bulkprov.sim.server import SimulatorProcess
from bulkprov.sim.users import generate_user
from tests.e2e import expected_values, store_problems

TOKEN = "soak-scim-token"
SECRET = "soak-graph-secret"


def soak(users: int, rate: float, seed: int, workdir: Path) -> dict[str, Any]:
    env = dict(os.environ, BULKPROV_GRAPH_SECRET=SECRET, BULKPROV_SCIM_TOKEN=TOKEN)
    args = ["--users", str(users), "--seed", str(seed), "--scim-token", TOKEN]
    args += ["--graph-secret", SECRET, "--fault-seed", str(seed), "--fault-timeout", "1.0"]
    if rate:
        args += ["--faults", str(rate), "--fault-kinds", ",".join(SOAK_KINDS)]
        args += ["--graph-faults", str(rate), "--graph-fault-kinds", ",".join(GRAPH_KINDS)]
    with SimulatorProcess(args) as servers:
        config, state = workdir / "bulkprov.toml", workdir / "state.sqlite3"
        write_demo_config(config, servers.as_json(), state, concurrency=32, page_size=250)
        text = config.read_text(encoding="utf-8")
        # a client timeout below the injected 1 s read timeout, fast retries
        text = text.replace("[target]\n", "[target]\ntimeout = 0.5\n", 1)
        text = text.replace("[graph]\n", "[graph]\ntimeout = 0.5\n", 1)
        config.write_text(text, encoding="utf-8")
        base = [sys.executable, "-m", "bulkprov"]
        started = time.perf_counter()
        rounds = 0
        code = None
        for command in ["sync", *["retry-failed"] * 6]:
            rounds += 1
            proc = subprocess.run(
                [*base, command, "-c", str(config), "--quiet"],
                env=env,
                check=False,
                stdout=subprocess.DEVNULL,
            )
            code = proc.returncode
            if code == 0:
                break
        wall = time.perf_counter() - started
        control = servers.scim_control_url
        store = httpx.get(f"{control}/_sim/store", trust_env=False, timeout=120).json()
        counters = httpx.get(f"{control}/_sim/counters", trust_env=False).json()
        faults = httpx.get(f"{control}/_sim/faults", trust_env=False).json()
    cfg = load_config(config)
    expected = expected_values(cfg, (generate_user(i, seed) for i in range(users)))
    problems = store_problems(expected, store)
    problems += [f"POSTed {n}x: {name}" for name, n in counters["duplicate_posts"].items()]
    return {
        "rate": rate,
        "seconds": wall,
        "rounds": rounds,
        "exit": code,
        "requests": counters["total"],
        "injected": sum(faults.get("injected", {}).values()),
        "kinds": len(faults.get("injected", {})),
        "completed": f"{len(expected) - sum(p.startswith('missing') for p in problems)}"
        f"/{len(expected)}",
        "problems": len(problems),
        "problem_list": problems[:10],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_faults", description=__doc__)
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--rate", type=float, default=0.10)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    rows = []
    for rate in (0.0, args.rate):
        with tempfile.TemporaryDirectory(prefix="bulkprov-soak-") as tmp:
            rows.append(soak(args.users, rate, args.seed, Path(tmp)))
    print(
        f"# machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        "| faults | users | s | rounds | requests | faults injected (kinds) | completed | problems |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['rate']:.0%} | {args.users:,} | {r['seconds']:.2f} | {r['rounds']} | "
            f"{r['requests']:,} | {r['injected']:,} ({r['kinds']}) | {r['completed']} | "
            f"{r['problems']} |"
        )
    for r in rows:
        for problem in r["problem_list"]:
            print(f"PROBLEM ({r['rate']:.0%}): {problem}")
    slow = rows[1]["seconds"] / rows[0]["seconds"]
    print(f"\nfault run / fault-free run: {slow:.2f}x")
    return 0 if all(r["problems"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
