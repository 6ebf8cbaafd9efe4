"""No secret in any log line, database row, file or exception text of a full run."""

from __future__ import annotations

import logging
import sqlite3
import traceback
from pathlib import Path

import pytest

from bulkprov import redact
from bulkprov.credentials import Secrets
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import GraphTenant, ScimService
from bulkprov.sim.faults import GRAPH_KINDS, SOAK_KINDS, FaultPlan
from bulkprov.sim.server import serve_simulators

from .conftest import FAST_RETRY, make_config

GRAPH_SECRET = "leak-canary-graph-secret-9f8e7d"
SCIM_TOKEN = "leak-canary-scim-token-1a2b3c"


def test_scrub_masks_plain_and_encoded_forms():
    redact.register("p@ss word+/=secret")
    text = "Authorization: Bearer p@ss word+/=secret; form=p%40ss+word%2B%2F%3Dsecret"
    assert "secret" not in redact.scrub(text).replace("[REDACTED]", "")
    redact.register("abc")  # too short to be a secret: ignored, ordinary text stays intact
    assert redact.scrub("abcdef") == "abcdef"


def test_log_records_of_any_library_are_scrubbed(caplog):
    redact.register("canary-in-a-log-line-123")
    caplog.set_level(logging.DEBUG)
    try:
        raise ValueError("token canary-in-a-log-line-123 refused")
    except ValueError:
        logging.getLogger("some.library").exception("sent %s", "canary-in-a-log-line-123")
    assert "canary-in-a-log-line-123" not in caplog.text
    assert "[REDACTED]" in caplog.text


def _raw_files(folder: Path) -> list[str]:
    return [f.read_bytes().decode("latin-1") for f in folder.iterdir()]


def _texts_of(exc: BaseException) -> list[str]:
    out = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            out += _texts_of(e)
    return out


@pytest.mark.slow  # ~20 s: a full run with 10 % faults, then the two failure paths
async def test_a_full_run_with_faults_and_failures_leaks_nothing(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("BULKPROV_GRAPH_SECRET", GRAPH_SECRET)
    monkeypatch.setenv("BULKPROV_SCIM_TOKEN", SCIM_TOKEN)
    tenant = GraphTenant(user_count=250, seed=6, client_secret=GRAPH_SECRET, token_lifetime=1)
    scim = ScimService(SCIM_TOKEN, id_seed=2)
    scim.faults = FaultPlan(rate=0.1, kinds=SOAK_KINDS, seed=3, timeout_seconds=0.3)
    tenant.faults = FaultPlan(rate=0.1, kinds=GRAPH_KINDS, seed=4, timeout_seconds=0.3)
    issued: list[str] = []
    original = tenant.issue_token

    def spy() -> str:
        issued.append(original())
        return issued[-1]

    tenant.issue_token = spy  # type: ignore[method-assign]
    texts: list[str] = []
    async with serve_simulators(tenant, scim) as servers:
        cfg = make_config(
            servers,
            tmp_path / "s.db",
            target__timeout=0.2,
            graph__timeout=0.2,
            graph__page_size=50,
        )
        secrets = Secrets.from_config(cfg)
        texts.append(repr(secrets))
        result = await run_sync(cfg, secrets, policy=FAST_RETRY)
        texts.append(repr(result))
        # the failure paths: a revoked SCIM token, then a wrong Graph secret
        scim.set_token("rotated")
        tenant.update_user(next(tenant.iter_users())["id"], department="Changed")
        with pytest.raises(BaseException) as info:
            await run_sync(cfg, secrets, policy=FAST_RETRY)
        texts += _texts_of(info.value)
        monkeypatch.setenv("BULKPROV_GRAPH_SECRET", GRAPH_SECRET + "-wrong")
        with pytest.raises(BaseException) as info:
            await run_sync(cfg, Secrets.from_config(cfg), policy=FAST_RETRY)
        texts += _texts_of(info.value)
    assert result.users == 250 and issued
    canaries = [GRAPH_SECRET, SCIM_TOKEN, *issued]
    texts.append(caplog.text)
    texts += [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    con = sqlite3.connect(cfg.state.path)
    texts += list(con.iterdump())
    con.close()
    texts += _raw_files(tmp_path)  # the database, its WAL and lock files, raw bytes
    blob = "\n".join(texts)
    assert len(blob) > 10_000
    for canary in canaries:
        assert canary not in blob
