"""Entra's provisioning job through Graph's synchronization API (bulkprov.graph.synchronization):
the answers read without I/O, then the requests against the simulated tenant."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from bulkprov.errors import CutoverRefused, SourceAuthError, SourceError
from bulkprov.graph.client import GraphClient, endpoint, read_purposes
from bulkprov.graph.synchronization import (
    JobClient,
    SyncJob,
    beta_url,
    choose_job,
    parse_job,
    parse_settings,
    quarantine_refusal,
)
from bulkprov.retry import RetryPolicy
from bulkprov.sim import GraphTenant, SimTransport
from bulkprov.sim.graph.synchronization import zoom_job_schema

from .conftest import GRAPH_SECRET

#: Microsoft's example answer of GET …/synchronization/jobs (api/synchronization-
#: synchronizationjob-list.md), one job of it
BOX_JOB = {
    "id": "{jobId}",
    "templateId": "BoxOutDelta",
    "schedule": {
        "expiration": None,
        "interval": "P10675199DT2H48M5.4775807S",
        "state": "Disabled",
    },
    "status": {
        "countSuccessiveCompleteFailures": 0,
        "escrowsPruned": False,
        "synchronizedEntryCountByType": [],
        "code": "Paused",
        "lastExecution": None,
        "lastSuccessfulExecution": None,
        "lastSuccessfulExecutionWithExports": None,
        "steadyStateFirstAchievedTime": "0001-01-01T00:00:00Z",
        "steadyStateLastAchievedTime": "0001-01-01T00:00:00Z",
        "quarantine": None,
    },
}
#: a cloud sync job as Microsoft's cloud-sync how-to lists it (an inbound job)
CLOUD_SYNC_JOB = {
    "id": "AD2AADProvisioning.fd1c9b9e8077402c8bc03a7186c8f976",
    "templateId": "AD2AADProvisioning",
    "schedule": {"expiration": None, "interval": "PT2M", "state": "Active"},
    "status": {
        "code": "Active",
        "lastExecution": {
            "countEscrowed": 15,
            "state": "Succeeded",
            "error": None,
            "timeBegan": "2019-11-20T16:15:21.116098Z",
            "timeEnded": "2019-11-20T16:17:24.7488681Z",
        },
    },
}


def test_microsofts_example_job_reads_as_a_paused_job_without_schedule():
    """The list example of Graph's reference: a paused Box job, no schedule."""
    job = parse_job(BOX_JOB)
    assert (job.id, job.template_id, job.code, job.active) == (
        "{jobId}",
        "BoxOutDelta",
        "Paused",
        False,
    )
    assert job.provisions_from_entra
    assert "schedule: every never (no schedule), Disabled" in job.describe()


def test_a_cloud_sync_job_is_not_a_provisioning_job_from_entra():
    """AD2AADProvisioning provisions into Entra ID: never taken over without --job."""
    cloud = parse_job(CLOUD_SYNC_JOB)
    assert not cloud.provisions_from_entra
    assert "last cycle: Succeeded at 2019-11-20T16:17:24.7488681Z, 15 escrowed" in "\n".join(
        cloud.describe()
    )
    with pytest.raises(CutoverRefused, match="no job that provisions from Entra ID"):
        choose_job([cloud], "sp1")
    assert choose_job([cloud], "sp1", wanted=cloud.id)[0] is cloud


def test_the_provisioning_job_is_chosen_and_the_others_listed():
    """One job provisions from Entra: it is taken, the cloud sync job is listed as other."""
    box, cloud = parse_job(BOX_JOB), parse_job(CLOUD_SYNC_JOB)
    chosen, others = choose_job([cloud, box], "sp1")
    assert chosen is box and others == [cloud]


def test_no_job_and_several_jobs_are_refused_with_what_to_do():
    """None: nothing to take over; several: --job says which."""
    with pytest.raises(CutoverRefused, match="has no provisioning job") as none:
        choose_job([], "sp-9")
    assert "Object ID" in str(none.value) and "sp-9" in str(none.value)
    two = [parse_job(BOX_JOB), parse_job({**BOX_JOB, "id": "scim.1", "templateId": "scim"})]
    with pytest.raises(CutoverRefused, match="2 provisioning jobs.*--job ID"):
        choose_job(two, "sp1")
    with pytest.raises(CutoverRefused, match="no job 'nope'; its jobs: {jobId}"):
        choose_job(two, "sp1", wanted="nope")


def test_a_quarantined_job_is_refused_with_its_reason_and_meaning():
    """Quarantine names the reason, what it means, and --accept-quarantine."""
    doc = {
        **BOX_JOB,
        "status": {
            "code": "Quarantine",
            "quarantine": {
                "reason": "EncounteredQuarantineException",
                "currentBegan": "2026-03-01T10:00:00Z",
                "error": {"code": "SCIMCredentialValidationUnauthorized", "message": "401"},
            },
        },
    }
    refusal = quarantine_refusal(parse_job(doc))
    assert refusal is not None
    text = str(refusal)
    assert "in quarantine since 2026-03-01T10:00:00Z: EncounteredQuarantineException" in text
    assert "expired or revoked SCIM token" in text and "--accept-quarantine" in text
    assert quarantine_refusal(parse_job(BOX_JOB)) is None
    bare = parse_job({"id": "j", "status": {"code": "Quarantine"}})
    assert "Entra does not say why" in str(quarantine_refusal(bare))


def test_a_job_without_an_id_is_a_source_error():
    with pytest.raises(SourceError, match="without an 'id'"):
        parse_job({"templateId": "scim"})


def test_settings_keep_scope_threshold_and_url_and_drop_the_token():
    """SyncAll, SkipOutOfScopeDeletions, the threshold, BaseAddress; never SecretToken."""
    token = "eyJ-the-zoom-token-that-must-not-stay"
    doc = {
        "value": [
            {"key": "BaseAddress", "value": "https://api.zoom.us/scim/"},
            {"key": "SecretToken", "value": token},
            {
                "key": "SyncNotificationSettings",
                "value": '{"Enabled":true,"Recipients":"","DeleteThresholdEnabled":true,'
                '"DeleteThresholdValue":250}',
            },
            {"key": "SyncAll", "value": "False"},
            {"key": "SkipOutOfScopeDeletions", "value": "True"},
        ]
    }
    s = parse_settings(doc)
    assert (s.sync_all, s.skip_out_of_scope_deletions) == (False, True)
    assert (s.delete_threshold_enabled, s.delete_threshold) == (True, 250)
    assert s.base_address == "https://api.zoom.us/scim"
    assert token not in repr(s) and "SecretToken" in s.keys
    assert parse_settings({"value": []}).sync_all is None
    with pytest.raises(SourceError):
        parse_settings({"nothing": 1})


def test_the_beta_base_is_derived_from_v1():
    assert beta_url("https://graph.microsoft.com/v1.0/") == "https://graph.microsoft.com/beta"
    assert beta_url("https://graph.example/api") is None


def test_synchronization_urls_name_their_permission():
    """A refusal of the job read or of pause names Synchronization.ReadWrite.All and
    Application.ReadWrite.OwnedBy, not the assignment read's Application.Read.All."""
    base = "https://graph.test/v1.0"
    assert endpoint(f"{base}/servicePrincipals/x/synchronization/jobs", base) == "synchronization"
    assert (
        endpoint(f"{base}/servicePrincipals/x/synchronization/jobs/j/pause", base)
        == "synchronization/write"
    )
    assert endpoint(f"{base}/servicePrincipals/x", base) == "servicePrincipals/{id}"
    purposes = read_purposes()
    assert "Synchronization.Read.All" in purposes["synchronization"]
    assert "Synchronization.ReadWrite.All" in purposes["synchronization/write"]
    assert "Application.ReadWrite.OwnedBy" in purposes["synchronization/write"]


# --- against the simulated tenant ------------------------------------------------------------


@pytest.fixture
def tenant() -> GraphTenant:
    return GraphTenant(user_count=5, seed=1, client_secret=GRAPH_SECRET)


@pytest.fixture
async def jobs(tenant: GraphTenant):
    http = httpx.AsyncClient(transport=SimTransport(tenant.handle))
    graph = GraphClient(
        authority="http://graph.sim",
        tenant_id=tenant.tenant_id,
        client_id=tenant.client_id,
        client_secret=SecretStr(GRAPH_SECRET),
        base_url="http://graph.sim/v1.0",
        http=http,
        policy=RetryPolicy(max_attempts=2, max_seconds=1, base=0.001, cap=0.001),
    )
    async with http:
        yield JobClient(graph, tenant.directory.service_principal_id)


async def test_the_simulated_job_is_listed_read_paused_and_started(tenant, jobs):
    """List, schema, pause (204, Paused), start (204, Active): Graph's shapes end to end."""
    sp = tenant.directory.service_principal_id
    job_id = tenant.synchronization.add_job(sp, zoom_job_schema(), synchronized={"User": 4})
    listed = await jobs.jobs()
    assert [j.id for j in listed] == [job_id]
    job: SyncJob = listed[0]
    assert job.active and job.template_id == "scim" and job.synchronized == (("User", 4),)
    schema = await jobs.schema(job_id)
    assert schema["synchronizationRules"][0]["objectMappings"][0]["attributeMappings"]
    await jobs.pause(job_id)
    assert (await jobs.job(job_id)).code == "Paused"
    await jobs.start(job_id)
    assert (await jobs.job(job_id)).code == "Active"
    assert [c[2] for c in tenant.synchronization.calls] == ["schema", "pause", "", "start", ""]


async def test_an_unknown_service_principal_is_a_404_naming_the_object_id(jobs):
    jobs_of_nobody = JobClient(jobs.graph, "00000000-0000-0000-0000-00000000dead")
    with pytest.raises(SourceError, match="404.*Object ID") as info:
        await jobs_of_nobody.jobs()
    assert info.value.status == 404


async def test_a_missing_permission_is_a_403_naming_it(tenant, jobs):
    """The read refused: Synchronization.Read.All named; pause refused: ReadWrite.All."""
    sp = tenant.directory.service_principal_id
    job_id = tenant.synchronization.add_job(sp, zoom_job_schema())
    tenant.synchronization.denied = {"read"}
    with pytest.raises(SourceAuthError, match=r"\(403\).*Synchronization\.Read\.All"):
        await jobs.jobs()
    tenant.synchronization.denied = {"write"}
    with pytest.raises(SourceAuthError, match=r"POST .*/pause \(403\)") as info:
        await jobs.pause(job_id)
    assert "Synchronization.ReadWrite.All" in str(info.value)
    assert tenant.synchronization.code(job_id) == "Active"


async def test_settings_are_read_from_the_beta_secrets_or_left_out(tenant, jobs):
    """Readable: the scope; refused: None and why, never an error."""
    sp = tenant.directory.service_principal_id
    tenant.synchronization.set_secrets(sp, sync_all=True, delete_threshold=120)
    settings, why = await jobs.settings()
    assert settings is not None and why is None
    assert (settings.sync_all, settings.delete_threshold) == (True, 120)
    tenant.synchronization.denied = {"secrets"}
    settings, why = await jobs.settings()
    assert settings is None and why is not None and "secrets (beta)" in why
