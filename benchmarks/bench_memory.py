"""Peak RSS of ``bulkprov sync`` at 100k and at 1M users (not in CI: ~10 minutes).

Memory must stay flat however large the tenant (bounded streams, per-page SQL): the goal is
≤ 200 MB at 1M users, growing ≤ 20 % from 100k. The simulator runs with ``--no-track-posts``
(its store alone takes ~1.2 KB per user, in its own process).

    python -m benchmarks.bench_memory [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import sys

from .bench_pipeline import HEADER, fmt, machine, scenario


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args(argv)
    print(f"# machine: {machine()}")
    print(HEADER, flush=True)
    rss = {}
    for n in (int(x) for x in args.sizes.split(",")):
        case = {
            "name": f"memory-{n // 1000}k",
            "users": n,
            "concurrency": args.concurrency,
            "rate_limit": 0,
            "no_track_posts": True,
        }
        (r,) = scenario(case, ["bulkprov"])
        rss[n] = r["peak_rss_mb"]
        print(fmt(r), flush=True)
    sizes = sorted(rss)
    if len(sizes) >= 2:
        growth = rss[sizes[-1]] / rss[sizes[0]] - 1
        print(
            f"\npeak RSS {rss[sizes[0]]} MB at {sizes[0]:,} → {rss[sizes[-1]]} MB at "
            f"{sizes[-1]:,} users: {growth:+.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
