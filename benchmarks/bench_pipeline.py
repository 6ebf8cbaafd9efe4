"""End-to-end throughput of ``bulkprov sync`` against the loopback simulators, side by side.

Each scenario (``benchmarks/cases/*.json``) starts the simulators in one subprocess (pinned to
a CPU with ``"pin": true``) and runs, against the same fresh SCIM store:

* ``bulkprov``: ``bulkprov sync`` in a child process (``runs`` times: run 2 is a re-sync);
* ``baseline``: :mod:`benchmarks.baseline_entra`, Entra's way: one user at a time, a filter
  GET then a POST (or a PATCH) — time-boxed to ``baseline_users``;
* ``loadgen``: :mod:`bulkprov.sim.loadgen` (raw aiohttp), the simulator's raw POST capacity
  with the cheapest client, as the ceiling bulkprov is compared against.

Reported per side: users/s, SCIM requests per user (from the simulator's counters), the
client process's CPU per user (µs, ``wait4`` rusage: user + system), its peak RSS, 429s, and
for rate-limited cases the *sustained* creates/s after ``sustain_after`` seconds (sampled
from the simulator's counters every second).

    python -m benchmarks.bench_pipeline --cases benchmarks/cases/suite.json [--only NAME]
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
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bulkprov.commands.demo import GRAPH_SECRET_ENV, SCIM_TOKEN_ENV, write_demo_config
from bulkprov.sim.server import SimulatorProcess

HERE = Path(__file__).parent


def control(scim_url: str, what: str, method: str = "GET") -> Any:
    base = scim_url.rsplit("/scim2", 1)[0]
    r = httpx.request(method, f"{base}/_sim/{what}", timeout=60, trust_env=False)
    r.raise_for_status()
    return r.json() if r.content else None


def created(c: dict[str, Any]) -> int:
    """Users the simulator created so far (single POSTs answered 201 + Bulk operations)."""
    return int(c.get("statuses", {}).get("201", 0)) + int(c.get("bulk_operations", 0))


class Sampler(threading.Thread):
    """Polls the simulator's counters every second while a client runs."""

    def __init__(self, scim_url: str) -> None:
        super().__init__(daemon=True)
        self.url = scim_url
        self.samples: list[tuple[float, int, int, int]] = []  # t, created, total, throttled
        self._done = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self._done.wait(1.0):
            try:
                c = control(self.url, "counters")
            except httpx.HTTPError:
                continue
            t = time.perf_counter() - self.t0
            self.samples.append((t, created(c), c["total"], c.get("throttled", 0)))

    def stop(self) -> None:
        self._done.set()
        self.join()

    def found(self, limit: float, fraction: float = 0.9, span: float = 5.0) -> float | None:
        """Seconds from the client's start until creates over ``span`` seconds first reached
        ``fraction`` of ``limit`` per second (``None``: never)."""
        samples = self.samples
        j = 0
        for t, c, _, _ in samples:
            while samples[j][0] < t - span - 0.5:
                j += 1
            t0, c0 = samples[j][0], samples[j][1]
            if t - t0 >= span - 0.5 and (c - c0) / (t - t0) >= fraction * limit:
                return round(t, 1)
        return None

    def sustained(self, after: float) -> tuple[float | None, float | None]:
        """(creates/s, fraction of requests answered 429) from ``after`` s to the last sample
        (the tail where the run winds down is left out by the 1 s sampling)."""
        window = [s for s in self.samples if s[0] >= after]
        if len(window) < 3:
            return None, None
        (t0, c0, r0, h0), (t1, c1, r1, h1) = window[0], window[-2]
        if t1 <= t0:
            return None, None
        rate = (c1 - c0) / (t1 - t0)
        return rate, ((h1 - h0) / (r1 - r0) if r1 > r0 else 0.0)


def child(
    cmd: list[str], env: dict[str, str], cpu: int | None = None, cwd: str | None = None
) -> dict[str, Any]:
    """Run ``cmd``; return its last JSON line plus wall time, CPU and peak RSS.

    CPU comes from ``wait4``; peak RSS from the child itself (:mod:`benchmarks._peak`), as
    ``wait4``'s ``ru_maxrss`` would include the harness's own memory copied by ``fork``.
    """
    started = time.perf_counter()
    fd, peak_path = tempfile.mkstemp(prefix="bench-peak-")
    os.close(fd)
    if cmd[:2] == [sys.executable, "-m"]:
        cmd = [sys.executable, "-m", "benchmarks._peak", *cmd[2:]]
        env = dict(env, BENCH_PEAK_FILE=peak_path)
    if cpu is not None:  # taskset, not preexec_fn: the sampler thread is already running
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=cwd)
    assert proc.stdout is not None
    final: dict[str, Any] = {}
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") in (None, "finished"):
            final = event
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 10):
        raise SystemExit(f"{' '.join(cmd[:4])} failed with exit code {code}")
    final["wall"] = time.perf_counter() - started
    final["cpu"] = usage.ru_utime + usage.ru_stime
    try:
        peak_kib = int(Path(peak_path).read_text() or 0)
    finally:
        os.unlink(peak_path)
    final["rss_mb"] = (peak_kib or usage.ru_maxrss) / 1024
    return final


def sim_args(case: dict[str, Any], token: str, secret: str) -> list[str]:
    # "=" form: a random secret may start with "-"
    args = ["--users", str(case["users"]), "--seed", "11", f"--scim-token={token}"]
    args += [f"--graph-secret={secret}", "--latency-ms", str(case.get("latency_ms", 0))]
    if case.get("graph_latency_ms"):
        args += ["--graph-latency-ms", str(case["graph_latency_ms"])]
    if case.get("sim_rate_limit"):
        args += ["--rate-limit", str(case["sim_rate_limit"])]
        if case.get("sim_limiter"):  # bucket (default), gcra, fixed, sliding
            args += ["--limiter", case["sim_limiter"]]
        if case.get("sim_burst") is not None:
            args += ["--burst", str(case["sim_burst"])]
        if case.get("sim_no_retry_after"):
            args.append("--no-retry-after")
    if case.get("sim_bulk"):
        args += ["--bulk-max-operations", str(case["sim_bulk"])]
    if case.get("no_track_posts"):
        args.append("--no-track-posts")
    if case.get("zoom"):  # the strict Zoom mode, its per-label buckets at the case's limits
        args += ["--zoom", f"--zoom-light={case['light']}", f"--zoom-medium={case['medium']}"]
        if case.get("zoom_pending"):
            args.append(f"--zoom-pending={case['zoom_pending']}")
    if case.get("pin"):
        args += ["--cpu", "1"]
    return args


def write_config(case: dict[str, Any], info: dict[str, Any], tmp: Path) -> Path:
    cfg = tmp / "bench.toml"
    if case.get("zoom"):  # the Zoom profile, paced at the same limits as the simulator
        write_demo_config(
            cfg,
            info,
            tmp / "state.sqlite3",
            case["concurrency"],
            profile="zoom",
            light=case["light"],
            medium=case["medium"],
        )
        return cfg
    write_demo_config(
        cfg, info, tmp / "state.sqlite3", case["concurrency"], case.get("rate_limit", 0)
    )
    extra = []
    if case.get("bulk"):
        extra.append("bulk = true")
    if case.get("adaptive") is False:
        extra.append("adaptive = false")
    if extra:
        text = cfg.read_text()
        marker = f"rate_limit = {case.get('rate_limit', 0)}\n"
        cfg.write_text(text.replace(marker, marker + "\n".join(extra) + "\n", 1))
    return cfg


def row(
    side: str,
    users: int,
    result: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    sampler: Sampler,
    case: dict[str, Any],
) -> dict[str, Any]:
    requests = after["total"] - before["total"]
    rate, share_429 = sampler.sustained(case.get("sustain_after", 5))
    extra = {}
    if case.get("sim_rate_limit"):  # how soon the limit was reached, and 429s over the run
        extra["found_s"] = sampler.found(float(case["sim_rate_limit"]))
        throttled = after.get("throttled", 0) - before.get("throttled", 0)
        extra["share_429_run"] = round(throttled / requests, 4) if requests else 0.0
    return {
        "side": side,
        "users": users,
        "seconds": round(result["wall"], 2),
        "users_per_s": round(users / result["wall"], 1) if users else 0.0,
        "sustained_creates_per_s": round(rate, 1) if rate is not None else None,
        "requests_per_user": round(requests / users, 4) if users else 0.0,
        "cpu_us_per_user": round(result["cpu"] / users * 1e6, 1) if users else 0.0,
        "peak_rss_mb": round(result["rss_mb"], 1),
        "throttled_429": after.get("throttled", 0) - before.get("throttled", 0),
        "share_429": round(share_429, 4) if share_429 is not None else None,
        **extra,
    }


def measure(
    side: str, cmd: list[str], env: dict[str, str], url: str, case: dict[str, Any], users_of: Any
) -> dict[str, Any]:
    before = control(url, "counters")
    sampler = Sampler(url)
    sampler.start()
    try:
        # `python -m` puts the working directory first on sys.path: a client from another
        # tree runs there, or this tree's package would shadow its PYTHONPATH
        result = child(cmd, env, 0 if case.get("pin") else None, case.get("client_tree"))
    finally:
        sampler.stop()
    after = control(url, "counters")
    out = row(side, users_of(result), result, before, after, sampler, case)
    out["detail"] = {k: v for k, v in result.get("counts", {}).items() if v}
    return out


def scenario(case: dict[str, Any], sides: list[str]) -> list[dict[str, Any]]:
    token, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = dict(os.environ, **{GRAPH_SECRET_ENV: secret, SCIM_TOKEN_ENV: token})
    if case.get("client_tree"):  # the client from another source tree (e.g. `git archive`
        # of the commit before), against this tree's simulators: before and after, side by side
        env["PYTHONPATH"] = str(case["client_tree"])
    sim = SimulatorProcess(sim_args(case, token, secret), timeout=120)
    sim.start()
    url = sim.info["scim_url"]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(case, sim.info, Path(tmp))
            if "bulkprov" in sides:
                # per run: extra `sync` arguments (a re-sync's run 3 is `--full`)
                run_args = case.get("run_args") or [[]] * case.get("runs", 1)
                runs = len(run_args)
                for i in range(runs):
                    cmd = [sys.executable, "-m", "bulkprov", "sync", "-c", str(cfg), "--json"]
                    cmd += run_args[i]
                    r = measure(
                        "bulkprov",
                        cmd,
                        env,
                        url,
                        case,
                        lambda res: sum(res.get("counts", {}).values()),
                    )
                    if runs > 1:
                        r["side"] += f" (run {i + 1}{''.join(' ' + a for a in run_args[i])})"
                    rows.append(r)
            if "baseline" in sides and case.get("baseline_users", 0):
                if not (case.get("runs", 1) > 1 or case.get("run_args")):
                    control(url, "reset", "POST")  # an empty target again
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.baseline_entra",
                    "-c",
                    str(cfg),
                    "--limit",
                    str(case["baseline_users"]),
                ]
                rows.append(
                    measure(
                        "baseline (Entra-style)",
                        cmd,
                        env,
                        url,
                        case,
                        lambda res: res.get("users", 0),
                    )
                )
            for side in ("loadgen",):
                if side not in sides or not case.get("loadgen_users", 0):
                    continue
                control(url, "reset", "POST")
                n = case["loadgen_users"]
                cmd = [
                    sys.executable,
                    "-m",
                    "bulkprov.sim.loadgen",
                    url,
                    f"--token={token}",
                    "-n",
                    str(n),
                    "-c",
                    str(case.get("loadgen_concurrency", 32)),
                ]
                rows.append(
                    measure(
                        f"{side} (aiohttp client: raw capacity)",
                        cmd,
                        env,
                        url,
                        case,
                        lambda res: res.get("requests", 0),
                    )
                )
    finally:
        sim.stop()
    for r in rows:
        r["case"] = case["name"]
    return rows


def machine() -> str:
    return (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cores "
        f"(load {os.getloadavg()[0]:.2f}), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )


HEADER = (
    "| case | side | users | s | users/s | sustained creates/s | requests/user | CPU µs/user "
    "| peak RSS MB | 429s (share) |\n|---|---|---|---|---|---|---|---|---|---|"
)


def fmt(r: dict[str, Any]) -> str:
    share = f" ({r['share_429']:.1%})" if r.get("share_429") is not None else ""
    sustained = r["sustained_creates_per_s"] if r["sustained_creates_per_s"] is not None else "–"
    return (
        f"| {r['case']} | {r['side']} | {r['users']:,} | {r['seconds']} | {r['users_per_s']:,} | "
        f"{sustained} | {r['requests_per_user']} | {r['cpu_us_per_user']} | {r['peak_rss_mb']} | "
        f"{r['throttled_429']}{share} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--cases", type=Path, default=HERE / "cases" / "suite.json")
    ap.add_argument("--only", action="append", default=[], help="run only this case (repeatable)")
    ap.add_argument("--users", type=int, default=None, help="override every case's user count")
    ap.add_argument(
        "--sides",
        default="bulkprov,baseline,loadgen",
        help="comma-separated: bulkprov, baseline, loadgen (raw aiohttp)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also append rows to this JSONL file")
    args = ap.parse_args(argv)
    cases = json.loads(args.cases.read_text())
    sides = args.sides.split(",")
    print(f"# machine: {machine()}")
    print(HEADER, flush=True)
    for case in cases:
        if args.only and case["name"] not in args.only:
            continue
        if args.users:
            case["users"] = args.users
        for r in scenario(case, sides):
            print(fmt(r), flush=True)
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
