"""Throughput against concurrency: bulkprov and the raw load generators, as a PNG chart.

For each concurrency, one unlimited scenario of :mod:`benchmarks.bench_pipeline` runs the
sides against a fresh simulator; the chart shows users/s (bulkprov) and POSTs/s (the load
generator over raw aiohttp: a lower bound of the simulator's ceiling).

    python -m benchmarks.chart_concurrency --users 10000 --out benchmarks/concurrency.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bench_pipeline import HEADER, fmt, machine, scenario


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--levels", default="1,2,4,8,16,32,64")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "concurrency.png")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    print(f"# machine: {machine()}")
    print(HEADER, flush=True)
    points: dict[str, list[tuple[int, float, float]]] = {
        "bulkprov": [],
        "loadgen": [],
    }
    for c in levels:
        case = {
            "name": f"{args.users // 1000}k-c{c}",
            "users": args.users,
            "concurrency": c,
            "rate_limit": 0,
            "loadgen_users": args.users,
            "loadgen_concurrency": c,
        }
        for r in scenario(case, ["bulkprov", "loadgen"]):
            print(fmt(r), flush=True)
            side = r["side"].split(" ", 1)[0]
            points[side].append((c, r["users_per_s"], r["cpu_us_per_user"]))
    args.out.with_suffix(".json").write_text(json.dumps(points, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for side, label in (
        ("loadgen", "aiohttp loadgen (POSTs/s)"),
        ("bulkprov", "bulkprov sync (users/s)"),
    ):
        xs = [p[0] for p in points[side]]
        ys = [p[1] for p in points[side]]
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(x) for x in levels])
    ax.set_xlabel("concurrency (connections / workers)")
    ax.set_ylabel("per second")
    ax.set_title(f"Throughput against concurrency, {args.users:,} users, loopback, 2 cores")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
