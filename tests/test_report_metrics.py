"""Pure parts of the run report, the Prometheus endpoint and the log export."""

from __future__ import annotations

import httpx
import pytest

from bulkprov.observe.logexport import parse_since, steps, write_entra_csv
from bulkprov.observe.metrics import MetricsServer, render
from bulkprov.observe.report import ReportData, Sample, intervals, render_html
from bulkprov.pipeline.stats import RunStats


def sample(at, processed, requests, throttled):
    return Sample(at, processed, requests, throttled, 0, {})


def test_intervals_treat_a_counter_that_went_down_as_a_restart():
    samples = [
        sample(100.0, 0, 0, 0),
        sample(101.0, 500, 520, 4),
        sample(102.0, 900, 940, 6),
        # the process was killed; the resumed one starts its request counters at 0
        sample(160.0, 900, 10, 1),
        sample(161.0, 1400, 530, 3),
    ]
    spans = intervals(samples)
    assert [i.users for i in spans] == [500, 400, 0, 500]
    assert [i.requests for i in spans] == [520, 420, 10, 520]
    assert [i.throttled for i in spans] == [4, 2, 1, 2]
    assert spans[0].rate == 500.0
    data = ReportData(
        {
            "id": 3,
            "status": "completed",
            "started_at": 100.0,
            "finished_at": 161.5,
            "resumes": 1,
            "counts": {"created": 1400},
            "message": None,
        },
        [],
        samples,
    )
    assert data.requests == 1470 and data.throttled == 9
    page = render_html(data)
    assert 'data-figure="requests">1,470<' in page
    assert 'data-chart="throughput" data-points="4"' in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")


def test_report_escapes_what_it_shows():
    data = ReportData(
        {
            "id": 1,
            "status": "completed_with_failures",
            "started_at": 1.0,
            "finished_at": 2.0,
            "resumes": 0,
            "counts": {"failed": 1},
            "message": None,
        },
        [{"user_name": "<b>x</b>", "graph_id": "g", "action": "create", "reason": "a & b"}],
        [],
    )
    page = render_html(data)
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "a &amp; b" in page and "<b>x" not in page


def test_metrics_text_and_endpoint():
    stats = RunStats(run_id=4, phase="provisioning")
    stats.counts["created"] = 7
    stats.counts["failed"] = 2
    stats.counts["deleted"] = 1
    text = render(stats, 123.456)
    assert 'bulkprov_users_total{outcome="created",status="success"} 7' in text
    assert 'bulkprov_users_total{outcome="deleted",status="success"} 1' in text
    assert 'bulkprov_users_total{outcome="failed",status="failure"} 2' in text
    assert "bulkprov_users_per_second 123.46" in text
    assert "bulkprov_queue_depth 0" in text
    assert 'bulkprov_run_phase{phase="provisioning"} 1' in text
    assert "# TYPE bulkprov_scim_throttled_total counter" in text


async def test_metrics_server_serves_on_loopback():
    stats = RunStats(run_id=2)
    async with MetricsServer(stats, lambda: 5.0, port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(trust_env=False) as client:
            r = await client.get(server.url)
            stats.counts["updated"] = 3
            r2 = await client.get(server.url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "bulkprov_run_id 2" in r.text
    assert 'outcome="updated",status="success"} 3' in r2.text


def test_parse_since():
    assert parse_since("90m", now=10_000.0) == 10_000.0 - 5400
    assert parse_since("7d", now=1e6) == 1e6 - 7 * 86400
    assert parse_since("2026-01-02T00:00:00+00:00") == 1767312000.0
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("last week")


def test_entra_csv_names_deletes_as_entra_does(tmp_path):
    entry = {
        "id": 9,
        "run_id": 2,
        "at": 0.0,
        "graph_id": "g",
        "user_name": "a@x.com",
        "action": "delete",
        "status": "success",
        "reason": "deleted permanently in Entra ID",
        "scim_id": "s",
        "modified": None,
    }
    log = write_entra_csv([entry], tmp_path)[0].read_text(encoding="utf-8").splitlines()
    assert log[1].split(",")[3] == "Delete"
    assert steps(entry)[-1][1] == "Provision the object (delete)"


def test_steps_follow_entras_order():
    base = {"user_name": "a", "graph_id": "g", "scim_id": "s"}
    assert [
        s[0]
        for s in steps(
            {**base, "action": "other", "status": "skipped", "reason": "department is not Sales"}
        )
    ] == ["import", "scoping"]
    failed = steps({**base, "action": "update", "status": "failure", "reason": "400 bad"})
    assert failed[-1] == ("export", "Provision the object (update)", "failure", "400 bad")
