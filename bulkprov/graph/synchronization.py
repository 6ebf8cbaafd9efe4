"""Read (and pause or start) Entra's provisioning job through Graph's synchronization API.

``bulkprov migrate`` takes over from the Entra provisioning service. Everything it knows
about the running job comes from here: the answers are read without I/O (:func:`parse_jobs`,
:func:`choose_job`, :func:`parse_settings`, :func:`quarantine_refusal`), and
:class:`JobClient` sends the requests through :class:`~bulkprov.graph.client.GraphClient`
(its token, retry policy, bounds and error texts).

Graph's documentation (``microsoftgraph/microsoft-graph-docs-contrib``, v1.0 unless noted;
https://learn.microsoft.com/graph/api/resources/synchronization-overview):

* ``GET /servicePrincipals/{id}/synchronization/jobs`` lists ``synchronizationJob`` objects
  (``api/synchronization-synchronizationjob-list.md``): ``id`` (``{templateId}.{hex}.{hex}``
  in Microsoft's examples), ``templateId`` (``BoxOutDelta``, ``AD2AADProvisioning`` …),
  ``schedule`` (``synchronizationSchedule``: ``expiration``, ``interval`` an ISO 8601
  duration such as ``PT40M``, ``state`` ``Active``/``Disabled``/``Paused``) and ``status``.
* ``synchronizationStatus`` (``resources/synchronization-synchronizationstatus.md``):
  ``code`` is ``NotConfigured``, ``NotRun``, ``Active``, ``Paused`` or ``Quarantine``;
  ``lastExecution``/``lastSuccessfulExecution`` (``synchronizationTaskExecution``: ``state``,
  ``timeBegan``, ``timeEnded``, ``countEscrowed``, ``countExported``, ``error``);
  ``quarantine`` (``synchronizationQuarantine``: ``reason`` one of
  ``EncounteredBaseEscrowThreshold``, ``EncounteredTotalEscrowThreshold``,
  ``EncounteredEscrowProportionThreshold``, ``EncounteredQuarantineException``,
  ``Unknown``, ``QuarantinedOnDemand``, ``TooManyDeletes``, ``IngestionInterrupted``;
  ``currentBegan``, ``nextAttempt``, ``seriesBegan``, ``seriesCount``, ``error``);
  ``synchronizedEntryCountByType`` (key/value pairs); ``escrowsPruned``.
* ``GET …/jobs/{jobId}/schema``: the job's ``synchronizationSchema`` (its object mappings and
  scoping filters), read by :func:`bulkprov.mapping.exchange.from_graph` like any schema.
* ``POST …/jobs/{jobId}/pause`` (``204 No Content``): "Temporarily stop a running
  synchronization job. All the progress, including job state, is persisted, and the job will
  continue from where it left off when a start call is made."
* ``POST …/jobs/{jobId}/start`` (``204``): "If the job is in a paused state, it continues
  processing changes from the point where it was paused. If the job is in quarantine, the
  quarantine status is cleared." Also: "Don't create scripts to call the start job
  continuously while it's running": bulkprov sends it once, on request.
* Permissions: reading needs ``Synchronization.Read.All`` (or ``…ReadWrite.All``); pause and
  start need ``Synchronization.ReadWrite.All``; ``Application.ReadWrite.OwnedBy`` serves
  both when the app owns the enterprise application (``api/…-get.md``, ``…-pause.md``).
* The scope setting ("Sync only assigned users and groups" / "all") is not on the job: it is
  the ``SyncAll`` key of the application's synchronization *secrets*
  (``resources/synchronization-synchronizationsecretkeystringvaluepair.md``: "Determines
  scope of sync between all users and groups or only ones that are assigned"), beside
  ``SkipOutOfScopeDeletions``, ``SyncNotificationSettings``, ``BaseAddress`` (the tenant URL)
  and ``SecretToken``. v1.0 only documents writing them (``PUT``); Microsoft's how-to
  "Skip deletion of user accounts that go out of scope" (entra-docs
  ``skip-out-of-scope-deletions.md``) reads them with ``GET
  https://graph.microsoft.com/beta/servicePrincipals/{id}/synchronization/secrets``. bulkprov
  tries that read and goes on without it when it fails (:meth:`JobClient.settings`); it keeps
  only the keys above and never the ``SecretToken``. The accidental-deletion threshold in
  ``SyncNotificationSettings`` (``DeleteThresholdEnabled``, ``DeleteThresholdValue``) is from
  a Microsoft troubleshooting note, not the reference (facts.md §2.5, [T]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bulkprov import _json
from bulkprov.errors import CutoverRefused, SourceAuthError, SourceError
from bulkprov.graph.client import GraphClient

#: a synchronizationStatus code that means the job still provisions
ACTIVE = "Active"
QUARANTINE = "Quarantine"

#: what each quarantineReason means for a cut-over (resources/synchronization-
#: synchronizationquarantine.md; QUARANTINE in facts.md §2.4)
QUARANTINE_REASONS = {
    "EncounteredQuarantineException": (
        "Entra could not go on at all, most often because the target refused its "
        "credentials (an expired or revoked SCIM token): bulkprov would meet the same refusal"
    ),
    "EncounteredEscrowProportionThreshold": (
        "more than 40 % of its provisioning events failed: the target holds only part of "
        "what Entra meant to provision"
    ),
    "EncounteredBaseEscrowThreshold": "too many users failed (Entra's failure threshold)",
    "EncounteredTotalEscrowThreshold": "too many users failed (Entra's absolute limit)",
    "TooManyDeletes": (
        "its accidental-deletion threshold held a batch of deletes: someone must decide "
        "whether they were meant"
    ),
    "QuarantinedOnDemand": "an administrator put it in quarantine",
    "IngestionInterrupted": "reading the source was interrupted",
    "Unknown": "Entra does not say why",
}

#: templateIds of jobs that provision *into* Entra ID or Active Directory (cloud sync, HR
#: inbound, API-driven inbound), lowercased: not a job bulkprov can take over
_INBOUND_MARKERS = ("2aad", "2ad", "2entra")


@dataclass(frozen=True, slots=True)
class Execution:
    """One ``synchronizationTaskExecution``: a run of the job."""

    state: str | None
    began: str | None
    ended: str | None
    escrowed: int | None
    exported: int | None
    error: str | None

    def describe(self) -> str:
        when = self.ended or self.began or "?"
        parts = [f"{self.state or 'unknown'} at {when}"]
        if self.escrowed:
            parts.append(f"{self.escrowed:,} escrowed (failed, retried later)")
        if self.error:
            parts.append(f"error: {self.error}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A ``synchronizationQuarantine``: why the job stopped, since when, until when."""

    reason: str
    current_began: str | None
    next_attempt: str | None
    series_began: str | None
    series_count: int | None
    error: str | None

    def meaning(self) -> str:
        return QUARANTINE_REASONS.get(self.reason, QUARANTINE_REASONS["Unknown"])


@dataclass(frozen=True, slots=True)
class SyncJob:
    """What bulkprov reads of one ``synchronizationJob``."""

    id: str
    template_id: str | None
    code: str
    schedule_interval: str | None = None
    schedule_state: str | None = None
    last_execution: Execution | None = None
    last_success: Execution | None = None
    quarantine: Quarantine | None = None
    #: ``synchronizedEntryCountByType``: (key, count) as Graph names them
    synchronized: tuple[tuple[str, int], ...] = ()
    escrows_pruned: bool = False
    successive_failures: int = 0

    @property
    def provisions_from_entra(self) -> bool:
        """Whether the template is one that provisions *from* Entra ID (an app's
        provisioning), not into it (cloud sync, HR-driven or API-driven inbound)."""
        template = (self.template_id or "").lower()
        return not any(marker in template for marker in _INBOUND_MARKERS)

    @property
    def active(self) -> bool:
        """The job still provisions (its status code is ``Active``)."""
        return self.code == ACTIVE

    def label(self) -> str:
        return f"{self.id} (template {self.template_id or '?'}, {self.code})"

    def describe(self) -> list[str]:
        """The lines ``bulkprov migrate`` prints about the job."""
        lines = [f"status: {self.code}"]
        if self.schedule_interval or self.schedule_state:
            lines.append(
                f"schedule: every {_duration(self.schedule_interval)}, "
                f"{self.schedule_state or 'state unknown'}"
            )
        if self.last_execution is not None:
            lines.append(f"last cycle: {self.last_execution.describe()}")
        if self.last_success is not None and self.last_success != self.last_execution:
            lines.append(f"last cycle without errors: {self.last_success.describe()}")
        if self.synchronized:
            counts = ", ".join(f"{key} {count:,}" for key, count in self.synchronized)
            lines.append(f"synchronized entries: {counts}")
        if self.escrows_pruned:
            lines.append(
                "escrows pruned: the initial cycle passed Entra's failure threshold and its "
                "failures were dropped (the plan below shows who is absent)"
            )
        if self.quarantine is not None:
            q = self.quarantine
            lines.append(
                f"quarantine: {q.reason} since {q.current_began or '?'}"
                + (f" (next attempt {q.next_attempt})" if q.next_attempt else "")
                + (f": {q.error}" if q.error else "")
            )
        return lines


@dataclass(frozen=True, slots=True)
class ProvisioningSettings:
    """The keys bulkprov takes from the application's synchronization secrets (``None``:
    the key was not there). The ``SecretToken`` is never kept."""

    #: ``SyncAll``: True = "Sync all users and groups", False = "only assigned"
    sync_all: bool | None = None
    skip_out_of_scope_deletions: bool | None = None
    #: from ``SyncNotificationSettings``
    delete_threshold_enabled: bool | None = None
    delete_threshold: int | None = None
    #: ``BaseAddress``: the Tenant URL (the SCIM endpoint)
    base_address: str | None = None
    #: keys that were there, for the report (never their values)
    keys: tuple[str, ...] = field(default_factory=tuple)


# --- reading the answers (no I/O) ----------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _error_text(value: Any) -> str | None:
    if isinstance(value, Mapping):
        code, message = _text(value.get("code")), _text(value.get("message"))
        return ": ".join(p for p in (code, message) if p) or None
    return _text(value)


def _duration(value: str | None) -> str:
    """``PT40M`` → ``40 min``; Microsoft's "never" (``P10675199DT2H48M5.4775807S``, a .NET
    TimeSpan.MaxValue) → ``never``; anything else as it is."""
    if not value:
        return "?"
    if value.startswith("P10675199D"):
        return "never (no schedule)"
    if value.startswith("PT") and value[-1] in "HMS" and value[2:-1].isdigit():
        unit = {"H": "h", "M": "min", "S": "s"}[value[-1]]
        return f"{value[2:-1]} {unit}"
    return value


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _execution(doc: Any) -> Execution | None:
    if not isinstance(doc, Mapping):
        return None
    return Execution(
        state=_text(doc.get("state")),
        began=_text(doc.get("timeBegan")),
        ended=_text(doc.get("timeEnded")),
        escrowed=_int(doc.get("countEscrowed")),
        exported=_int(doc.get("countExported")),
        error=_error_text(doc.get("error")),
    )


def _quarantine(doc: Any) -> Quarantine | None:
    if not isinstance(doc, Mapping):
        return None
    return Quarantine(
        reason=_text(doc.get("reason")) or "Unknown",
        current_began=_text(doc.get("currentBegan")),
        next_attempt=_text(doc.get("nextAttempt")),
        series_began=_text(doc.get("seriesBegan")),
        series_count=_int(doc.get("seriesCount")),
        error=_error_text(doc.get("error")),
    )


def parse_job(doc: Any) -> SyncJob:
    """One ``synchronizationJob``; a :class:`~bulkprov.errors.SourceError` when it has no id."""
    if not isinstance(doc, Mapping) or not _text(doc.get("id")):
        raise SourceError("Graph listed a synchronization job without an 'id'")
    status: Mapping[str, Any] = _object(doc.get("status"))
    schedule: Mapping[str, Any] = _object(doc.get("schedule"))
    counts = []
    for pair in status.get("synchronizedEntryCountByType") or ():
        if isinstance(pair, Mapping) and _text(pair.get("key")):
            count = _int(pair.get("value"))
            if count is not None:
                counts.append((str(pair["key"]), count))
    quarantine = _quarantine(status.get("quarantine"))
    code = _text(status.get("code")) or "NotConfigured"
    return SyncJob(
        id=str(doc["id"]),
        template_id=_text(doc.get("templateId")),
        code=code,
        schedule_interval=_text(schedule.get("interval")),
        schedule_state=_text(schedule.get("state")),
        last_execution=_execution(status.get("lastExecution")),
        last_success=_execution(status.get("lastSuccessfulExecution")),
        quarantine=quarantine,
        synchronized=tuple(counts),
        escrows_pruned=status.get("escrowsPruned") is True,
        successive_failures=_int(status.get("countSuccessiveCompleteFailures")) or 0,
    )


def parse_jobs(items: Sequence[Any]) -> list[SyncJob]:
    """The jobs of a ``GET …/synchronization/jobs`` answer (its ``value`` items)."""
    return [parse_job(item) for item in items]


def choose_job(
    jobs: Sequence[SyncJob], service_principal_id: str, wanted: str | None = None
) -> tuple[SyncJob, list[SyncJob]]:
    """The provisioning job to take over, and the service principal's other jobs.

    ``wanted`` (``--job``) picks one by id. Otherwise the one job whose template provisions
    from Entra ID is taken; none, or several, is a
    :class:`~bulkprov.errors.CutoverRefused` naming them.
    """
    listing = "; ".join(j.label() for j in jobs)
    if not jobs:
        raise CutoverRefused(
            f"service principal {service_principal_id} has no provisioning job (Graph lists no "
            "synchronization job for it): provisioning is not set up for this enterprise "
            "application, so there is nothing to take over — check that it is the object id "
            "of the enterprise application that provisions (Enterprise applications → the "
            "app → Properties → Object ID), or start from `bulkprov init`"
        )
    if wanted is not None:
        chosen = [j for j in jobs if j.id == wanted]
        if not chosen:
            raise CutoverRefused(
                f"service principal {service_principal_id} has no job {wanted!r}; its jobs: "
                f"{listing}"
            )
        return chosen[0], [j for j in jobs if j is not chosen[0]]
    outbound = [j for j in jobs if j.provisions_from_entra]
    if not outbound:
        raise CutoverRefused(
            f"service principal {service_principal_id} has no job that provisions from Entra "
            f"ID (its jobs provision into Entra ID or Active Directory: {listing}); give "
            "--job ID to take one anyway"
        )
    if len(outbound) > 1:
        raise CutoverRefused(
            f"service principal {service_principal_id} has {len(outbound)} provisioning jobs "
            f"({'; '.join(j.label() for j in outbound)}): give --job ID to say which one "
            "bulkprov takes over"
        )
    return outbound[0], [j for j in jobs if j is not outbound[0]]


def quarantine_refusal(job: SyncJob) -> CutoverRefused | None:
    """Why a quarantined job is not taken over as it is (``None``: it is not quarantined)."""
    if job.code != QUARANTINE and job.quarantine is None:
        return None
    q = job.quarantine or Quarantine("Unknown", None, None, None, None, None)
    since = f" since {q.current_began}" if q.current_began else ""
    error = f" ({q.error})" if q.error else ""
    return CutoverRefused(
        f"Entra's provisioning job {job.id} is in quarantine{since}: {q.reason}{error} — "
        f"{q.meaning()}. Its view of the target is incomplete and its cause is likely to "
        "stop bulkprov too: fix the cause first (Entra admin center → the app → "
        "Provisioning shows the details), or run `bulkprov migrate` again with "
        "--accept-quarantine to take it over as it is (its plan then lists every user the "
        "job failed)"
    )


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
        return value.strip().lower() in ("true", "1")
    return None


def parse_settings(doc: Any) -> ProvisioningSettings:
    """The keys bulkprov uses from a ``GET …/synchronization/secrets`` answer
    (``{"value": [{"key", "value"}]}``); every other value, the ``SecretToken`` first, is
    dropped here, before anything could print it."""
    items = doc.get("value") if isinstance(doc, Mapping) else doc
    if not isinstance(items, list):
        raise SourceError("the synchronization secrets answer holds no 'value' list")
    found: dict[str, Any] = {}
    keys = []
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            continue
        key = item["key"]
        keys.append(key)
        if key in ("SyncAll", "SkipOutOfScopeDeletions", "SyncNotificationSettings", "BaseAddress"):
            found[key] = item.get("value")
    enabled = threshold = None
    notify = found.get("SyncNotificationSettings")
    if isinstance(notify, str):
        try:
            notify = _json.loads(notify)
        except _json.JSONDecodeError:
            notify = None
    if isinstance(notify, Mapping):
        enabled = _flag(notify.get("DeleteThresholdEnabled"))
        threshold = _int(notify.get("DeleteThresholdValue"))
    base = found.get("BaseAddress")
    return ProvisioningSettings(
        sync_all=_flag(found.get("SyncAll")),
        skip_out_of_scope_deletions=_flag(found.get("SkipOutOfScopeDeletions")),
        delete_threshold_enabled=enabled,
        delete_threshold=threshold,
        base_address=base.strip().rstrip("/") if isinstance(base, str) and base.strip() else None,
        keys=tuple(keys),
    )


def beta_url(base_url: str) -> str | None:
    """Graph's ``beta`` base for a ``…/v1.0`` base (``None`` for any other base)."""
    base = base_url.rstrip("/")
    return base[: -len("/v1.0")] + "/beta" if base.endswith("/v1.0") else None


# --- the requests --------------------------------------------------------------------------


class JobClient:
    """Graph's synchronization API for one service principal, through ``graph``."""

    def __init__(self, graph: GraphClient, service_principal_id: str) -> None:
        self.graph = graph
        self.service_principal_id = service_principal_id
        self.root = (
            f"{graph.base_url}/servicePrincipals/{quote(service_principal_id, safe='')}"
            "/synchronization"
        )

    def job_url(self, job_id: str) -> str:
        return f"{self.root}/jobs/{quote(job_id, safe='')}"

    async def jobs(self) -> list[SyncJob]:
        """Every job of the service principal (``GET …/synchronization/jobs``)."""
        items: list[Any] = []
        async for page in self.graph.pages(f"{self.root}/jobs"):
            items.extend(page.users)
        return parse_jobs(items)

    async def job(self, job_id: str) -> SyncJob:
        return parse_job(await self.graph.get_json(self.job_url(job_id)))

    async def schema(self, job_id: str) -> dict[str, Any]:
        """The job's ``synchronizationSchema``."""
        doc = await self.graph.get_json(f"{self.job_url(job_id)}/schema")
        if not isinstance(doc, dict):
            raise SourceError(f"the schema of job {job_id} is not a JSON object")
        return doc

    async def settings(self) -> tuple[ProvisioningSettings | None, str | None]:
        """The scope, skip-out-of-scope and deletion-threshold settings from the
        application's synchronization secrets (the beta read Microsoft's how-to uses), or
        ``None`` and why they could not be read: they are not needed to go on."""
        beta = beta_url(self.graph.base_url)
        if beta is None:
            return None, f"graph.base_url {self.graph.base_url} is not a …/v1.0 URL"
        sp = quote(self.service_principal_id, safe="")
        url = f"{beta}/servicePrincipals/{sp}/synchronization/secrets"
        try:
            return parse_settings(await self.graph.get_json(url)), None
        except SourceAuthError:
            return None, (
                "Graph refused GET …/synchronization/secrets (beta): the app may lack "
                "Synchronization.ReadWrite.All, or the read is not open to it"
            )
        except SourceError as exc:
            return None, str(exc)

    async def pause(self, job_id: str) -> None:
        """``POST …/jobs/{jobId}/pause``."""
        await self.graph.post(f"{self.job_url(job_id)}/pause")

    async def start(self, job_id: str) -> None:
        """``POST …/jobs/{jobId}/start``."""
        await self.graph.post(f"{self.job_url(job_id)}/start")
