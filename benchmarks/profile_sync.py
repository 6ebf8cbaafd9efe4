"""Profile one ``bulkprov sync`` with py-spy (sampling: no slowdown of the profiled process).

Starts the simulators, runs the sync under ``py-spy record`` into collapsed stacks, then
prints the functions with the most samples: own time (leaf) and inclusive (on the stack).

    python -m benchmarks.profile_sync --users 20000 --concurrency 32 [--out prof.txt]
    python -m benchmarks.profile_sync --users 3000 --concurrency 8 --rate-limit 60 --latency-ms 40
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bulkprov.commands.demo import GRAPH_SECRET_ENV, SCIM_TOKEN_ENV
from bulkprov.sim.server import SimulatorProcess

from .bench_pipeline import sim_args, write_config


def summarise(collapsed: Path, top: int) -> None:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        count = int(n)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    print(f"{total} samples")
    print("\n## own time")
    for f, n in own.most_common(top):
        print(f"{n / total:6.1%}  {f}")
    print("\n## inclusive")
    for f, n in incl.most_common(top):
        print(f"{n / total:6.1%}  {f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rate-limit", type=float, default=0, help="target.rate_limit (and the sim's)")
    ap.add_argument("--latency-ms", type=int, default=0, help="the SCIM simulator's latency")
    ap.add_argument("--out", type=Path, default=None, help="keep the collapsed stacks here")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    token, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = dict(os.environ, **{GRAPH_SECRET_ENV: secret, SCIM_TOKEN_ENV: token})
    case = {
        "users": args.users,
        "concurrency": args.concurrency,
        "rate_limit": args.rate_limit,
        "sim_rate_limit": args.rate_limit,
        "latency_ms": args.latency_ms,
    }
    with SimulatorProcess(sim_args(case, token, secret)) as _, tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(case, _.as_json(), Path(tmp))
        out = args.out or Path(tmp) / "stacks.txt"
        cmd = [
            spy,
            "record",
            "--gil",
            "--format",
            "raw",
            "-r",
            "250",
            "-o",
            str(out),
            "--",
            sys.executable,
            "-m",
            "bulkprov",
            "sync",
            "-c",
            str(cfg),
            "--json",
        ]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        summarise(out, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
