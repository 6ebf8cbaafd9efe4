"""An optional Prometheus endpoint for a running sync (``bulkprov sync --metrics-port``).

Served with aiohttp, already a dependency (it serves the simulators), in the sync's own
event loop, rather than with ``prometheus-client``: every figure already lives in one
:class:`~bulkprov.pipeline.run.RunStats`, so a scrape renders a snapshot of it (a pull, like a
custom collector) and nothing is counted twice on the hot path; ``prometheus-client`` would
add a dependency, a process-global registry and a server thread for a dozen lines of the
stable text exposition format (version 0.0.4).

It binds 127.0.0.1 unless told otherwise: the figures include user counts, and a
scraper on another host should come through whatever proxy the operator trusts.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from bulkprov.errors import ConfigError
from bulkprov.observe.health import render_metrics
from bulkprov.pipeline import RunStats

if TYPE_CHECKING:
    from aiohttp import web

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: RunStats count key (the outcome label) → its status label as in the provisioning log
OUTCOMES = {
    "created": "success",
    "updated": "success",
    "linked": "success",
    "disabled": "success",
    "deleted": "success",
    "unchanged": "skipped",
    "skipped": "skipped",
    "held back": "skipped",
    "failed": "failure",
    "warning": "warning",
}


def render(stats: RunStats, current_rate: float) -> str:
    """The text exposition of one snapshot of ``stats``."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value:g}" if labels else f"{name} {value:g}")

    metric(
        "bulkprov_users_total",
        "counter",
        "Users processed by the current run, by outcome and log status.",
        [
            (f'{{outcome="{k}",status="{OUTCOMES[k]}"}}', float(v))
            for k, v in stats.counts.items()
            if k in OUTCOMES
        ],
    )
    metric(
        "bulkprov_scim_requests_total",
        "counter",
        "SCIM requests sent by this process (retries included).",
        [("", float(stats.requests))],
    )
    metric(
        "bulkprov_scim_throttled_total",
        "counter",
        "429 Too Many Requests answers from the SCIM target.",
        [("", float(stats.throttled))],
    )
    metric(
        "bulkprov_users_per_second",
        "gauge",
        "Users processed per second over the last few seconds.",
        [("", round(current_rate, 2))],
    )
    metric(
        "bulkprov_queue_depth",
        "gauge",
        "Users decided and waiting for a SCIM worker.",
        [("", float(stats.queue_depth))],
    )
    metric(
        "bulkprov_graph_pages_total",
        "counter",
        "Microsoft Graph pages of users read by the current run.",
        [("", float(stats.pages))],
    )
    metric("bulkprov_run_id", "gauge", "Id of the current run.", [("", float(stats.run_id))])
    if stats.seat_figures is not None:
        figures = stats.seat_figures()
        for name, key, help_ in (
            ("bulkprov_zoom_seats_used", "used", "Zoom seats of a pool held by managed users."),
            ("bulkprov_zoom_seats_left", "left", "Zoom seats of a pool still free."),
            ("bulkprov_zoom_seats_held", "held", "Users held for want of a seat in this run."),
        ):
            metric(
                name,
                "gauge",
                help_,
                [(f'{{pool="{_label(pool)}"}}', float(f[key])) for pool, f in figures.items()],
            )
    # the state's health (read when the run starts and when it ends): what the alerts of
    # deploy/prometheus/alerts.yaml watch
    lines.extend(render_metrics(stats.health))
    metric(
        "bulkprov_run_phase",
        "gauge",
        "1 for the phase the run is in.",
        [(f'{{phase="{_label(stats.phase)}"}}', 1.0)],
    )
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """``async with MetricsServer(stats, rate, port=9464):`` serves ``GET /metrics``."""

    def __init__(
        self,
        stats: RunStats,
        current_rate: Callable[[], float],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.stats = stats
        self.current_rate = current_rate
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = render(self.stats, self.current_rate())
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def __aenter__(self) -> Self:
        # aiohttp's server side is imported only when metrics are served (~35 ms of every
        # sync's start-up otherwise, python -X importtime)
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror}",
                key="--metrics-port",
            ) from exc
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"
