"""Is a provisioning job healthy? ``bulkprov status --check`` and the health metrics.

What the container's HEALTHCHECK, a Kubernetes probe, a cron wrapper or a monitoring
system asks. A job is unhealthy, with these exit codes (the first that applies wins; the
codes 8 and 9 are the ones ``bulkprov sync`` exits with for the same state; so is 12
when the target's daily request limit stopped the run (Zoom; any other stop is 12 here
only); 13 means nothing else to any command):

==  ===========================================================================
8   the last run was quarantined (too many users failed): see its report
12  the last run stopped before its end (failed, killed, interrupted) and no
    sync is running now: the next ``sync`` resumes it, but nothing is running
9   disables or deletes wait for approval (``bulkprov staged``, ``approve``)
13  no cycle completed within ``--max-age`` (or none ever, and none running)
==  ===========================================================================

A sync in progress is healthy however long it takes, as long as a cycle completed within
``--max-age`` (or it is the first one). Failed users waiting in escrow do not make a job
unhealthy (each is retried on its schedule); they are counted, and
``bulkprov_escrowed_users`` can be alerted on.
"""

from __future__ import annotations

from dataclasses import dataclass

from bulkprov.checkpoint.health import StateHealth

EXIT_QUARANTINED = 8
EXIT_HELD = 9
EXIT_STOPPED = 12
EXIT_STALE = 13


@dataclass(frozen=True, slots=True)
class Problem:
    exit_code: int
    #: a short name for JSON and logs: quarantined, stopped, held, stale
    kind: str
    text: str


def check(
    health: StateHealth | None, *, now: float, max_age: float | None, live: bool
) -> list[Problem]:
    """What is wrong with the job, most urgent first (empty: healthy).

    ``health``: None when there is no state database yet. ``live``: a sync holds the state
    now. ``max_age``: seconds since the last completed cycle beyond which the job is stale
    (None: only "never completed" counts).
    """
    problems: list[Problem] = []
    last = health.last_run if health is not None else None
    if last is not None and last.status == "quarantined" and not live:
        problems.append(
            Problem(
                EXIT_QUARANTINED,
                "quarantined",
                f"run {last.id} was quarantined: {last.message or 'too many users failed'} "
                f"(`bulkprov report {last.id}`; the next `bulkprov sync` goes on past the "
                "reasons it reported)",
            )
        )
    if last is not None and last.status == "running" and not live:
        problems.append(
            Problem(
                EXIT_STOPPED,
                "stopped",
                f"run {last.id} stopped before its end ({last.message or 'killed'}) and no "
                "sync is running: the next `bulkprov sync` "
                + ("resumes it" if last.kind in ("full", "new") else "reads its changes again"),
            )
        )
    if health is not None and health.held:
        problems.append(
            Problem(
                EXIT_HELD,
                "held",
                f"{health.held} disable/delete action(s) wait for approval "
                "(`bulkprov staged`, then `bulkprov approve`)",
            )
        )
    success = health.last_success if health is not None else None
    if success is None:
        if not live:
            problems.append(Problem(EXIT_STALE, "stale", "no cycle has completed yet"))
    elif max_age is not None and now - success > max_age:
        problems.append(
            Problem(
                EXIT_STALE,
                "stale",
                f"the last completed cycle (run {health.last_success_run if health else '?'}) "
                f"ended {_ago(now - success)} ago, more than --max-age {_ago(max_age)}",
            )
        )
    return problems


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def summary(health: StateHealth | None, *, now: float, live: bool) -> str:
    """One line of what is fine (printed by ``status --check`` whatever the verdict)."""
    if health is None:
        return "no state database yet"
    parts = []
    if health.last_success is not None:
        parts.append(
            f"last completed cycle: run {health.last_success_run}, "
            f"{_ago(now - health.last_success)} ago"
        )
    if live:
        parts.append("a sync is running")
    parts.append(f"{health.held} held action(s)")
    parts.append(f"{health.escrowed} user(s) in escrow")
    if health.quarantine:
        parts.append("in quarantine until a clean cycle")
    return "; ".join(parts)


def render_metrics(health: StateHealth | None) -> list[str]:
    """The health gauges in Prometheus' text format (the sync's endpoint serves them, and
    ``bulkprov status --metrics`` prints them for a textfile collector or a Pushgateway)."""
    lines: list[str] = []

    def gauge(name: str, help_: str, value: float) -> None:
        lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {value:.17g}"])

    gauge(
        "bulkprov_last_success_timestamp_seconds",
        "When the last completed cycle ended (Unix time; 0: none yet).",
        (health.last_success or 0.0) if health else 0.0,
    )
    gauge(
        "bulkprov_held_actions",
        "Disables and deletes held by the accidental-deletion threshold (bulkprov approve).",
        float(health.held) if health else 0.0,
    )
    gauge(
        "bulkprov_escrowed_users",
        "Failed users waiting in escrow for their next retry.",
        float(health.escrowed) if health else 0.0,
    )
    quarantined = health is not None and (
        bool(health.quarantine)
        or (health.last_run is not None and health.last_run.status == "quarantined")
    )
    gauge(
        "bulkprov_quarantined",
        "1 while the state is in quarantine (a run was stopped by too many failures).",
        1.0 if quarantined else 0.0,
    )
    return lines
