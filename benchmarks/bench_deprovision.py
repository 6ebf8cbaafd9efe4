"""Mass deprovisioning: users disabled in Entra, then one sync; single PATCHes against Bulk.

For each side, a fresh simulator (offering SCIM Bulk of 1,000 operations) and a fresh state:
a first sync creates every user, ``--disable`` of them are then disabled in the Graph
simulator (``accountEnabled=false``), and the second sync, an incremental one, stages and
sends their deactivations. The threshold is raised above ``--disable`` so nothing is held.
Reported for the second sync: SCIM requests per disabled user, and the whole process's
seconds and CPU (start-up, the delta read of the changed users and the checkpoint included),
CPU divided by the users disabled: compare the two sides, the absolute figures are not the
deactivations' cost alone.

    python -m benchmarks.bench_deprovision --users 20000 --disable 10000
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bulkprov.commands.demo import GRAPH_SECRET_ENV, SCIM_TOKEN_ENV
from bulkprov.sim.server import SimulatorProcess

from .bench_pipeline import child, control, sim_args, write_config


def side(bulk: bool, users: int, disable: int, concurrency: int) -> dict[str, Any]:
    token, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = dict(os.environ, **{GRAPH_SECRET_ENV: secret, SCIM_TOKEN_ENV: token})
    case = {"users": users, "concurrency": concurrency, "rate_limit": 0, "sim_bulk": 1000}
    case["bulk"] = bulk
    with (
        SimulatorProcess(sim_args(case, token, secret), timeout=120) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        info = sim.as_json()
        cfg = write_config(case, info, Path(tmp))
        text = cfg.read_text()
        assert "threshold = 500" in text
        cfg.write_text(text.replace("threshold = 500", f"threshold = {disable + 1}", 1))
        sync = [sys.executable, "-m", "bulkprov", "sync", "-c", str(cfg), "--json"]
        child(sync, env)
        with sqlite3.connect(Path(tmp) / "state.sqlite3") as db:
            ids = [r[0] for r in db.execute("SELECT graph_id FROM users WHERE active=1")]
        if len(ids) < disable:
            raise SystemExit(f"only {len(ids)} active users to disable")
        with httpx.Client(base_url=info["graph_url"], trust_env=False, timeout=60) as http:
            for gid in ids[:disable]:
                http.patch(f"/_sim/users/{gid}", json={"accountEnabled": False}).raise_for_status()
        scim_url = info["scim_url"]
        before = control(scim_url, "counters")
        result = child(sync, env)
        after = control(scim_url, "counters")
    disabled = int(result.get("counts", {}).get("disabled", 0))
    if disabled != disable:
        raise SystemExit(f"the second sync disabled {disabled} users, not {disable}")
    requests = after["total"] - before["total"]
    return {
        "side": "Bulk (`target.bulk = true`)" if bulk else "single PATCHes",
        "disabled": disabled,
        "seconds": round(result["wall"], 2),
        "requests": requests,
        "requests_per_user": round(requests / disabled, 4) if disabled else None,
        "cpu_us_per_user": round(result["cpu"] / disabled * 1e6, 1) if disabled else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--disable", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    print(
        f"# machine: {platform.machine()} {os.cpu_count()} cores (load {load:.2f}), "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print("| side | users disabled | s (2nd sync) | SCIM requests | requests/user | CPU µs/user |")
    print("|---|---|---|---|---|---|")
    for bulk in (False, True):
        r = side(bulk, args.users, args.disable, args.concurrency)
        print(
            f"| {r['side']} | {r['disabled']:,} | {r['seconds']} | {r['requests']:,} | "
            f"{r['requests_per_user']} | {r['cpu_us_per_user']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
