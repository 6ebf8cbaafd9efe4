"""The run report: samples taken during a run, and one self-contained HTML page after it.

While ``bulkprov sync`` runs, :class:`RunSampler` reads :class:`~bulkprov.pipeline.run.RunStats`
once a second (never on the hot path) and appends one JSON line per sample to a sidecar
beside the state database::

    bulkprov-state.sqlite3.reports/run-7.samples.jsonl    (appended to across resumes)
    bulkprov-state.sqlite3.reports/run-7.html             (rewritten after each attempt)

Both hold the tenant's names: the folder is 0700, the files 0600 (whatever the umask,
:mod:`bulkprov.checkpoint.files`). A sidecar rather than the state database: sampling must never queue behind the
checkpoint writer's transactions, and a killed process loses at most one second of samples.

:func:`write_report` builds the page from the state database (run row, counts, failures
with their reasons) and the samples (throughput and 429s over time, drawn as inline SVG).
The page has no script, no external font, stylesheet or image, so it opens from a mail
attachment or an air-gapped jump host. Every figure carries a ``data-figure`` attribute so a
test (or a scraper) can read it back from the rendered DOM.
"""

from __future__ import annotations

import html
import itertools
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio

from bulkprov import _json
from bulkprov.checkpoint.files import open_private, private_dir, write_private
from bulkprov.checkpoint.store import StateStore
from bulkprov.config import Config
from bulkprov.pipeline import COUNT_KEYS, RunStats, Seats
from bulkprov.redact import inert

#: seconds between two samples
SAMPLE_SECONDS = 1.0
#: failures listed one by one in the report (all are in ``bulkprov logs``)
MAX_FAILURE_ROWS = 500


def reports_dir(cfg: Config) -> Path:
    """Where run reports and their samples live: beside the state database."""
    state = cfg.state.path
    return state.with_name(state.name + ".reports")


def samples_path(cfg: Config, run_id: int) -> Path:
    return reports_dir(cfg) / f"run-{run_id}.samples.jsonl"


def report_path(cfg: Config, run_id: int) -> Path:
    return reports_dir(cfg) / f"run-{run_id}.html"


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative figures at one instant (``requests``/``throttled`` count per process)."""

    at: float
    processed: int
    requests: int
    throttled: int
    queue: int
    counts: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "processed": self.processed,
            "requests": self.requests,
            "throttled": self.throttled,
            "queue": self.queue,
            "counts": self.counts,
        }


class RunSampler:
    """Samples a live run into memory (for the current rate) and into the sidecar."""

    def __init__(
        self, cfg: Config, stats: RunStats, every: float = SAMPLE_SECONDS, *, sidecar: bool = True
    ) -> None:
        self.cfg = cfg
        self.stats = stats
        self.every = every
        self.samples: list[Sample] = []
        #: append the samples to the run's sidecar file (``sync --watch``: only in memory,
        #: for the current rate, rather than a file per 30-second cycle)
        self.sidecar = sidecar
        self._file: IO[str] | None = None

    def take(self) -> Sample | None:
        """Record one sample now (once the run has an id)."""
        stats = self.stats
        if not stats.run_id:
            return None
        sample = Sample(
            time.time(),
            stats.processed,
            stats.requests,
            stats.throttled,
            stats.queue_depth,
            dict(stats.counts),
        )
        self.samples.append(sample)
        if len(self.samples) > 600:  # the rate needs only the recent past in memory
            del self.samples[:300]
        if not self.sidecar:
            return sample
        if self._file is None:
            path = samples_path(self.cfg, stats.run_id)
            private_dir(path.parent, own=True)
            self._file = open_private(path, "a")
        self._file.write(_json.dumps(sample.as_json()).decode() + "\n")
        self._file.flush()
        return sample

    def current_rate(self, window: float = 5.0) -> float:
        """Users per second over the last ``window`` seconds of samples."""
        if len(self.samples) < 2:
            return 0.0
        last = self.samples[-1]
        first = next(
            (s for s in reversed(self.samples) if last.at - s.at >= window), self.samples[0]
        )
        span = last.at - first.at
        return (last.processed - first.processed) / span if span > 0 else 0.0

    async def run(self) -> None:
        """Sample as soon as the run has an id, then every ``every`` seconds until cancelled."""
        while True:  # poll: RunStats has no event for "started", and polling costs nothing
            if self.stats.run_id:
                self.take()
                await anyio.sleep(self.every)
            else:
                await anyio.sleep(0.02)

    def close(self) -> None:
        """Take a last sample (the run's final figures) and close the sidecar."""
        self.take()
        if self._file is not None:
            self._file.close()
            self._file = None


def read_samples(path: Path) -> list[Sample]:
    """The samples of a run (a torn last line from a kill is ignored)."""
    out: list[Sample] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            d = _json.loads(line)
            out.append(
                Sample(
                    float(d["at"]),
                    int(d["processed"]),
                    int(d["requests"]),
                    int(d["throttled"]),
                    int(d.get("queue", 0)),
                    dict(d.get("counts", {})),
                )
            )
        except (_json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return out


@dataclass(frozen=True, slots=True)
class Interval:
    """What happened between two consecutive samples."""

    start: float  # seconds since the first sample
    seconds: float
    users: int
    requests: int
    throttled: int

    @property
    def rate(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else 0.0


def intervals(samples: list[Sample]) -> list[Interval]:
    """Per-interval deltas. A resumed run starts a new process whose request counters
    start at 0 again: a counter that went down is a restart, so its delta is its value."""
    out: list[Interval] = []
    if not samples:
        return out
    t0 = samples[0].at
    for prev, cur in itertools.pairwise(samples):

        def delta(a: int, b: int) -> int:
            return b - a if b >= a else b

        out.append(
            Interval(
                prev.at - t0,
                max(cur.at - prev.at, 0.0),
                max(cur.processed - prev.processed, 0),
                delta(prev.requests, cur.requests),
                delta(prev.throttled, cur.throttled),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ReportData:
    run: dict[str, Any]
    failures: list[dict[str, Any]]
    samples: list[Sample]
    #: profile "zoom": seats per pool now (used, left, cap, held), from the state
    seats: dict[str, dict[str, int]] | None = None

    @property
    def counts(self) -> dict[str, int]:
        return {k: int(self.run["counts"].get(k, 0)) for k in COUNT_KEYS}

    @property
    def requests(self) -> int:
        return (self.samples[0].requests if self.samples else 0) + sum(
            i.requests for i in intervals(self.samples)
        )

    @property
    def throttled(self) -> int:
        return (self.samples[0].throttled if self.samples else 0) + sum(
            i.throttled for i in intervals(self.samples)
        )

    @property
    def seconds(self) -> float:
        end = self.run["finished_at"] or (self.samples[-1].at if self.samples else None)
        return max(end - self.run["started_at"], 0.0) if end else 0.0


async def load_report_data(cfg: Config, run_id: int | None) -> ReportData | None:
    """Read what the report shows from the state database and the run's samples."""
    async with await StateStore.open(cfg.state.path) as store:
        run = await store.run_info(run_id)
        if run is None:
            return None
        failures = await store.log_entries(run_id=run["id"], status="failure", limit=None)
        seats = await Seats.load(cfg, store, held=True)
    return ReportData(
        run,
        failures,
        read_samples(samples_path(cfg, run["id"])),
        seats.figures() if seats is not None else None,
    )


async def write_report(cfg: Config, run_id: int | None = None) -> Path | None:
    """Write (or rewrite) a run's HTML report; ``None`` when there is no such run."""
    data = await load_report_data(cfg, run_id)
    if data is None:
        return None
    path = report_path(cfg, data.run["id"])
    private_dir(path.parent, own=True)
    write_private(path, render_html(data))
    return path


# -- HTML ---------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;
max-width:1100px;color:#1b1f24;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d0d7de;padding:.3em .7em;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.n{text-align:right;
font-variant-numeric:tabular-nums}.status{font-weight:600}.completed{color:#1a7f37}
.completed_with_failures{color:#9a6700}.running{color:#cf222e}svg{background:#fff;
border:1px solid #d0d7de}.muted{color:#57606a}code{font-size:.95em}
"""


def _esc(value: Any) -> str:
    """Text for the page: HTML-escaped, its control characters shown escaped (a user's name
    with a right-to-left override or an ESC reads as ``\u202e``/``\x1b``, as on a
    terminal: :func:`bulkprov.redact.inert`)."""
    return html.escape(inert("" if value is None else str(value)), quote=True)


def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _figure(name: str, value: Any, shown: str | None = None) -> str:
    return f'<td class="n" data-figure="{_esc(name)}">{_esc(shown if shown else value)}</td>'


def _row(label: str, name: str, value: Any, shown: str) -> str:
    return f"<tr><th>{_esc(label)}</th>{_figure(name, value, shown)}</tr>"


def svg_chart(
    title: str, points: list[tuple[float, float]], *, unit: str, name: str, color: str
) -> str:
    """A line chart of ``(seconds, value)`` points as inline SVG, with labelled axes."""
    width, height, left, bottom, top, right = 900, 220, 60, 30, 20, 15
    plot_w, plot_h = width - left - right, height - top - bottom
    max_x = max((x for x, _ in points), default=0.0) or 1.0
    max_y = max((y for _, y in points), default=0.0) or 1.0
    coords = " ".join(
        f"{left + x / max_x * plot_w:.1f},{top + plot_h - y / max_y * plot_h:.1f}"
        for x, y in points
    )
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}" '
            f'data-chart="{_esc(name)}" data-points="{len(points)}">'
        ),
        f"<title>{_esc(title)}</title>",
        (
            f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
            'stroke="#57606a"/>'
        ),
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#57606a"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11">{max_y:,.0f}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{left}" y="{height - 8}" font-size="11">0 s</text>',
        (
            f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" font-size="11">'
            f"{max_x:,.0f} s</text>"
        ),
        f'<text x="{left + 8}" y="{top + 12}" font-size="11" fill="#57606a">{_esc(unit)}</text>',
    ]
    if points:
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{coords}"/>'
        )
        if len(points) <= 60:  # few samples (a short run): mark each one
            parts += [
                f'<circle cx="{c.split(",")[0]}" cy="{c.split(",")[1]}" r="2.5" fill="{color}"/>'
                for c in coords.split()
            ]
    else:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
            'font-size="13" fill="#57606a">no samples</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _seats_table(seats: dict[str, dict[str, int]] | None) -> list[str]:
    """Zoom's seat pools: used, left, cap, and users held for want of a seat."""
    if not seats:
        return []
    out = ["<h2>Seats</h2><table><tr><th>pool</th><th>used</th><th>left</th><th>cap</th>"]
    out.append("<th>held (LicenseLimitExceeded)</th></tr>")
    for pool, f in seats.items():
        cells = "".join(
            _figure(f"seats.{pool}.{k}", f[k], f"{f[k]:,}") for k in ("used", "left", "cap", "held")
        )
        out.append(f"<tr><th>{_esc(pool)}</th>{cells}</tr>")
    out.append("</table>")
    return out


def render_html(data: ReportData) -> str:
    """The whole report page (pure: the same data gives the same page)."""
    run, counts = data.run, data.counts
    resumes = int(run["resumes"])
    users = sum(counts.values())
    seconds = data.seconds
    rate = users / seconds if seconds > 0 else 0.0
    spans = intervals(data.samples)
    # a point per interval, at its end: users/s and 429s in that interval
    rate_points = [(i.start + i.seconds, i.rate) for i in spans]
    throttle_points = [(i.start + i.seconds, float(i.throttled)) for i in spans]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>bulkprov run {run['id']}: {_esc(run['status'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<h1>bulkprov run <span data-figure="run_id">{run["id"]}</span></h1>',
        f'<p class="status {_esc(run["status"])}" data-figure="status">{_esc(run["status"])}</p>',
    ]
    if run.get("message"):
        out.append(f'<p class="muted" data-figure="message">{_esc(run["message"])}</p>')
    out += [
        "<h2>Summary</h2><table>",
        f"<tr><th>started</th><td>{_esc(_when(run['started_at']))}</td></tr>",
        f"<tr><th>finished</th><td>{_esc(_when(run['finished_at']))}</td></tr>",
        _row("duration", "seconds", f"{seconds:.1f}", f"{seconds:,.1f} s"),
        _row("resumed", "resumes", resumes, f"{resumes} time(s)"),
        _row("users processed", "users", users, f"{users:,}"),
        _row("average rate", "rate", f"{rate:.1f}", f"{rate:,.1f} users/s"),
        _row("SCIM requests", "requests", data.requests, f"{data.requests:,}"),
        _row("429 answers", "throttled", data.throttled, f"{data.throttled:,}"),
        "</table>",
        "<h2>Users by outcome</h2><table><tr>",
        "".join(f"<th>{k}</th>" for k in COUNT_KEYS),
        "</tr><tr>",
        "".join(_figure(f"count.{k}", counts[k], f"{counts[k]:,}") for k in COUNT_KEYS),
        "</tr></table>",
        *_seats_table(data.seats),
        "<h2>Throughput</h2>",
        svg_chart(
            "users per second", rate_points, unit="users/s", name="throughput", color="#0969da"
        ),
        "<h2>429 Too Many Requests</h2>",
        svg_chart(
            "429 answers per interval",
            throttle_points,
            unit="429s per interval",
            name="throttled",
            color="#cf222e",
        ),
    ]
    failures = data.failures
    out.append(f'<h2>Failures (<span data-figure="failures">{len(failures):,}</span>)</h2>')
    if failures:
        reasons = Counter(str(f["reason"] or "(no reason)") for f in failures)
        out.append("<table><tr><th>reason</th><th>users</th></tr>")
        out += [
            f'<tr><td>{_esc(r)}</td><td class="n" data-reason-count>{n:,}</td></tr>'
            for r, n in reasons.most_common(50)
        ]
        out.append("</table>")
        out.append("<table><tr><th>user</th><th>Graph id</th><th>action</th><th>reason</th></tr>")
        out += [
            "<tr data-failure>"
            f"<td>{_esc(f['user_name'])}</td><td><code>{_esc(f['graph_id'])}</code></td>"
            f"<td>{_esc(f['action'])}</td><td>{_esc(f['reason'])}</td></tr>"
            for f in failures[:MAX_FAILURE_ROWS]
        ]
        out.append("</table>")
        if len(failures) > MAX_FAILURE_ROWS:
            out.append(
                f'<p class="muted">{len(failures) - MAX_FAILURE_ROWS:,} more: '
                f"<code>bulkprov logs --run {run['id']} --status failure --limit 0</code></p>"
            )
    else:
        out.append("<p>None.</p>")
    out.append(
        f'<p class="muted">bulkprov · <code>bulkprov logs --run {run["id"]}</code> '
        "shows every user of this run.</p></body></html>"
    )
    return "\n".join(out)
