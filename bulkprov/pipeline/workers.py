"""② SCIM workers: each takes a :class:`WorkItem` from the work stream, sends its request(s)
to the target, and hands the user's outcome to the checkpoint writer.

``target.concurrency`` workers run at once (:func:`worker`); they share one
:class:`~bulkprov.scim.client.ScimClient`, whose pacer, rate limiter and 429 pause gate hold
the target's limit for all of them. What a request means for one user (create, update, link,
and the matching that resolves a 409 or an unknown outcome) is :class:`Applier`'s, which the
Bulk worker (:mod:`~bulkprov.pipeline.bulk`) and ``bulkprov provision`` use too.

Under ``target.profile = "zoom"`` the Applier speaks Zoom (docs/zoom-from-entra.md, "What Zoom
does differently"): an update is a PATCH of ``active`` and a PUT of the other changed fields;
a write Zoom may ignore is read back once and what Zoom kept is a Warning; Pro/Corp userTypes
go as Licensed/On-Prem with a Warning; a userName held by a pending invitation makes the user
Skipped (:class:`~bulkprov.errors.PendingInvitation`), never POSTed blindly.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from bulkprov import _json
from bulkprov.checkpoint.inflight import InflightLog
from bulkprov.checkpoint.store import StateStore, UserWrite
from bulkprov.checkpoint.store import disabled as disabled_write
from bulkprov.errors import (
    OutcomeUnknown,
    PendingInvitation,
    TargetError,
    TargetRejected,
    TargetStop,
)
from bulkprov.escrow import EscrowEntry
from bulkprov.mapping import MappedUser
from bulkprov.pipeline.decide import Engine, target_values
from bulkprov.pipeline.matching import Claims, duplicate_source
from bulkprov.pipeline.messages import Message, WorkItem, get, put
from bulkprov.pipeline.seats import no_seat_reason
from bulkprov.scim import requests as rq
from bulkprov.scim.client import ScimClient
from bulkprov.scim.responses import (
    advice,
    is_domain_refused,
    is_license_exhausted,
    is_pending_invitation,
    is_uniqueness_conflict,
    kept_values,
    list_resources,
    may_ignore,
)


async def worker(
    apply: Applier,
    work_recv: ObjectReceiveStream[WorkItem],
    out_send: ObjectSendStream[Message],
    stopping: Callable[[], bool],
) -> None:
    """A SCIM worker: one request (or a few: a 409 is resolved by matching) per item, its
    outcome to the writer. Stopping (a signal), it takes no new item: the item's page stays
    not durable and is redone by the resumed run."""
    async with work_recv, out_send:
        while True:
            try:
                item = await get(work_recv)
            except anyio.EndOfStream:
                return
            if stopping():
                break  # stopping: the item's page stays not durable and is redone
            await put(out_send, (item.page, await apply.apply_one(item)))


class Applier:
    """Sends one user's decision to the target and says how it went (a :class:`UserWrite`)."""

    def __init__(
        self,
        engine: Engine,
        scim: ScimClient,
        store: StateStore,
        claims: Claims,
        escrow: Mapping[str, EscrowEntry],
        waiting: Container[str] = frozenset(),
    ) -> None:
        self.scim = scim
        self.store = store
        self.claims = claims
        #: failed users waiting for their next retry: a create of one of them looks first
        self.escrow = escrow
        #: users the target held back (a pending invitation, no seat): they look first too,
        #: and their record is cleared once they are provisioned
        self.waiting = waiting
        self.dialect = engine.cfg.target.patch_dialect
        self.zoom = engine.cfg.target.zoom_profile
        #: the mapping's matching attributes, in precedence order
        self.matching = engine.mapper.matching
        self.redacted = engine.mapper.redacted_paths
        self.targets = engine.targets
        self.clearable = engine.clearable
        #: the creates in flight: a user's Graph id is written there before its POST
        self.inflight: InflightLog | None = None
        #: users an interrupted attempt may have created without a record: matched first
        self.maybe_created: frozenset[str] = frozenset()

    def must_match_first(self, graph_id: str) -> bool:
        """Whether a create of this user looks for its account before POSTing."""
        return graph_id in self.escrow or graph_id in self.waiting or graph_id in self.maybe_created

    def mark_inflight(self, graph_id: str) -> None:
        """Just before a POST that may create ``graph_id``'s account (see inflight.py)."""
        if self.inflight is not None:
            self.inflight.mark(graph_id)

    async def apply_one(self, item: WorkItem) -> UserWrite:
        """Apply one decision; a target error is this user's Failure (auth stops the run)."""
        try:
            return await self.apply(item)
        except TargetStop:
            raise  # stops the whole run (the client's message says what to do)
        except PendingInvitation as exc:
            return self.pending(item, exc)
        except TargetError as exc:
            if self.zoom and is_license_exhausted(exc):
                # no licence left: held as the seat guard holds, looked at again next cycle
                return UserWrite(
                    item.graph_id,
                    item.user_name,
                    "other",
                    "skipped",
                    no_seat_reason(exc.detail),
                    wait="license",
                    source=item.source,
                )
            return self.failed(item, exc)

    def failed(self, item: WorkItem, exc: TargetError) -> UserWrite:
        hint = advice(exc, zoom=self.zoom)
        return UserWrite(
            item.graph_id,
            item.user_name,
            item.decision.kind,
            "failure",
            reason=f"{exc}; {hint}" if hint else str(exc),
            scim_id=item.decision.scim_id,
            source=item.source,
        )

    def pending(self, item: WorkItem, exc: PendingInvitation) -> UserWrite:
        """Skipped: a pending Zoom invitation holds the userName (recorded in ``waiting``:
        the user is looked at again every cycle, and never counts toward quarantine)."""
        return UserWrite(
            item.graph_id,
            item.user_name,
            "other",
            "skipped",
            reason=(
                f"PendingInvitation: a pending Zoom invitation holds userName "
                f"{item.user_name!r} (Zoom: {exc.detail!r}). In Zoom's admin portal, have the "
                "user accept the invitation, or delete it (User Management → Users → "
                "Pending); bulkprov looks again every cycle and then links or creates the "
                "account"
            ),
            wait="pending",
            source=item.source,
        )

    async def apply(self, item: WorkItem) -> UserWrite:
        d = item.decision
        if d.kind == "create":
            return await self.create(item)
        assert d.scim_id is not None
        if d.kind == "disable":
            await self.scim.send(rq.set_active(d.scim_id, False, self.dialect))
            return self.disabled(item)
        # update or link: PATCH only what differs
        mapped = item.mapped
        assert mapped is not None
        outcome = await self.update(d.scim_id, d.changes, mapped.update_values, d.known)
        action = "update" if d.changes or d.kind == "update" else "link"
        return self.linked(item, d.scim_id, action, d.changes, d.reason, d.known, outcome)

    async def update(
        self,
        scim_id: str,
        changes: dict[str, Any],
        wanted: dict[str, Any],
        known: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Send one user's changes; what the target kept instead, and the warnings.

        RFC: one PATCH of the changed paths (:func:`~bulkprov.scim.requests.patch_operations`:
        ``add`` of the whole element where ``known``, the values the target holds, has none
        to replace; ``remove`` for a path cleared under ``target.clear_on_null``). Zoom: a
        PATCH for ``active`` and one PUT of the other changed fields
        (:func:`~bulkprov.scim.requests.zoom_updates`: a PUT sends each changed attribute
        whole, so there is no ``noTarget`` to avoid; ``clear_on_null`` is refused with the
        Zoom profile, config.py); an email Zoom refuses for its domain goes again without
        it; then, when a change touches an attribute Zoom may ignore, one GET reads the
        account back and each value Zoom kept is a warning naming it (never retried in a
        loop, never recorded as done).
        """
        outcome = Outcome()
        if not changes:
            return outcome
        if not self.zoom:
            ops = rq.patch_operations(changes, self.dialect, known)
            await self.scim.send(rq.patch_user(scim_id, ops))
            return outcome
        sent = dict(changes)
        wanted = dict(wanted)
        if "userType" in sent:
            sent["userType"], note = rq.zoom_user_type(sent["userType"])
            wanted["userType"] = sent["userType"]
            outcome.note(note)
        refused: dict[str, str] = {}
        for request in rq.zoom_updates(scim_id, sent, wanted, self.dialect):
            try:
                await self.scim.send(request)
            except TargetRejected as exc:
                if request.method != "PUT" or not is_domain_refused(exc):
                    raise
                emails = {p: v for p, v in sent.items() if p.lower().startswith("emails")}
                if not emails:
                    raise
                # Zoom refuses an email outside the managed domains: send the rest alone
                for path in emails:
                    refused[path] = exc.detail
                    del sent[path]
                rest = {p: v for p, v in sent.items() if p != "active"}
                if rest:
                    await self.scim.send(rq.put_user(scim_id, rest, wanted))
        watched = {p: v for p, v in changes.items() if may_ignore(p) is not None}
        if watched:
            kept = kept_values(watched, await self.scim.send(rq.get_user(scim_id)))
            for path, value in kept.items():
                why = refused.get(path)
                outcome.kept[path] = value
                outcome.note(
                    f"{path}: Zoom kept {value!r} instead of {changes[path]!r} ("
                    + (f"Zoom: {why!r}; " if why else "")
                    + f"{may_ignore(path)})"
                )
        return outcome

    def disabled(self, item: WorkItem) -> UserWrite:
        d = item.decision
        assert d.scim_id is not None
        return disabled_write(item.graph_id, item.user_name, d.reason, d.scim_id, item.state)

    def linked(
        self,
        item: WorkItem,
        scim_id: str,
        action: str,
        changes: dict[str, Any],
        reason: str,
        known: dict[str, Any] | None = None,
        outcome: Outcome | None = None,
    ) -> UserWrite:
        """The outcome of a PATCH (or a link that needed none): the values the target now
        holds, ``known`` ones kept (a source cleared without ``clear_on_null`` leaves the
        target's value, and a later ``add`` must not duplicate its element)."""
        mapped = item.mapped
        assert mapped is not None
        attrs = held_after(known, mapped.update_values, changes)
        if outcome is not None and outcome.kept:
            # what the target really holds: a later change of the user sends it again
            attrs = {**attrs, **{p: v for p, v in outcome.kept.items() if v is not None}}
            for path, value in outcome.kept.items():
                if value is None:
                    attrs.pop(path, None)
            changes = {p: v for p, v in changes.items() if p not in outcome.kept}
        warning = outcome.warning if outcome is not None else None
        return UserWrite(
            item.graph_id,
            mapped.user_name,
            action,
            "warning" if warning else "success",
            reason=f"{reason}; {warning}" if warning else reason,
            scim_id=scim_id,
            digest=mapped.digest,
            attrs=_json.dumps(attrs),
            active=is_active(mapped.update_values),
            modified=modified_json(changes, self.redacted) if changes else None,
            link=True,
            source=item.source,
            wait="" if item.graph_id in self.waiting else None,
        )

    async def create(self, item: WorkItem) -> UserWrite:
        mapped = item.mapped
        assert mapped is not None
        if self.must_match_first(item.graph_id):
            # It failed before, maybe after its create landed (a timeout, then a failed
            # match), a pending invitation held its userName, or a killed attempt may have
            # created it without recording it: look before POSTing again, as Entra does
            # before every create.
            found = await self.find(mapped)
            if found is not None:
                reason = (
                    "created before the restart (confirmed by matching)"
                    if item.graph_id in self.maybe_created
                    and item.graph_id not in self.escrow
                    and item.graph_id not in self.waiting
                    else "matched on retry"
                )
                return await self.link_found(item, found, reason)
        outcome = Outcome()
        body = mapped.body
        if self.zoom and "userType" in mapped.values:
            user_type, note = rq.zoom_user_type(mapped.values["userType"])
            if note is not None:
                outcome.note(note)
                body = _json.dumps({**mapped.resource, "userType": user_type})
        self.mark_inflight(item.graph_id)
        attempts = 0
        while True:
            attempts += 1
            try:
                doc = await self.scim.send(rq.create_user(body))
            except OutcomeUnknown:
                # The POST may have landed: look before sending it again.
                found = await self.find(mapped)
                if found is not None:
                    return await self.link_found(item, found, "created (confirmed by matching)")
                if attempts >= self.scim.policy.max_attempts:
                    raise
                continue
            except TargetRejected as exc:
                if not is_uniqueness_conflict(exc):
                    raise
                found = await self.find(mapped)
                if found is None:
                    raise TargetRejected(
                        f"{exc.detail}; and no account matched userName {mapped.user_name!r}",
                        status=exc.status,
                        scim_type=exc.scim_type,
                    ) from exc
                return await self.link_found(item, found, "matched an existing account (409)")
            scim_id = doc.get("id") if isinstance(doc, dict) else None
            if not isinstance(scim_id, str) or not scim_id:
                raise TargetRejected("the target's create answer has no 'id'", status=201)
            return self.created(item, scim_id, outcome)

    def created(self, item: WorkItem, scim_id: str, outcome: Outcome | None = None) -> UserWrite:
        mapped = item.mapped
        assert mapped is not None
        # Claimed until the writer made it durable (then the state answers who owns it): a
        # user with the same userName on another page, whose POST answers 409 and matches
        # this account meanwhile, fails as DuplicateSourceEntries instead of taking it.
        owner = self.claims.claim(scim_id, item.graph_id, {})
        if owner is not None:  # that user's 409 linked it while this POST was answered
            return duplicate_source(item.graph_id, mapped, scim_id, owner)
        warning = outcome.warning if outcome is not None else None
        write = UserWrite(
            item.graph_id,
            mapped.user_name,
            "create",
            "warning" if warning else "success",
            reason=warning,
            scim_id=scim_id,
            digest=mapped.digest,
            attrs=_json.dumps(mapped.update_values),
            active=is_active(mapped.values),
            modified=modified_json(mapped.values, self.redacted),
            link=True,
            source=item.source,
            wait="" if item.graph_id in self.waiting else None,
        )
        if self.inflight is not None:
            # answered: after a kill before the commit, the resume records it unasked
            self.inflight.answered(item.graph_id, created_record(write))
        return write

    async def find(self, mapped: MappedUser) -> dict[str, Any] | None:
        """Query the target by the matching attributes in precedence order (Entra's way)."""
        for path in self.matching:
            value = mapped.values.get(path)
            if not isinstance(value, str) or not value:
                continue
            try:
                doc = await self.scim.send(rq.find_users(path, value))
            except TargetRejected as exc:
                if self.zoom and is_pending_invitation(exc):
                    # Zoom: an invitation not accepted holds this userName; it is neither
                    # listed nor creatable, and a POST would only meet it again
                    raise PendingInvitation(exc.detail, status=exc.status) from exc
                raise
            resources, _ = list_resources(doc)
            if len(resources) > 1:
                raise TargetRejected(
                    f"{len(resources)} target accounts match {path} {value!r} "
                    "(DuplicateTargetEntries)"
                )
            if resources:
                return resources[0]
        return None

    async def link_found(self, item: WorkItem, resource: dict[str, Any], reason: str) -> UserWrite:
        mapped = item.mapped
        assert mapped is not None
        scim_id = str(resource["id"])
        owner = self.claims.claim(scim_id, item.graph_id, await self.store.owners([scim_id]))
        if owner is not None:
            dup = duplicate_source(item.graph_id, mapped, scim_id, owner)
            raise TargetRejected(dup.reason or "DuplicateSourceEntries", status=409)
        current = target_values(resource, self.targets or mapped.update_values)
        changes = rq.diff_values(mapped.update_values, current, self.clearable)
        outcome = await self.update(scim_id, changes, mapped.update_values, current)
        action = "update" if changes else "link"
        return self.linked(item, scim_id, action, changes, reason, current, outcome)


def created_record(w: UserWrite) -> bytes:
    """What the in-flight file keeps of an answered create (see recovered_create)."""
    return b"".join(
        (
            b'{"s":',
            _json.dumps(w.scim_id),
            b',"u":',
            _json.dumps(w.user_name),
            b',"d":',
            _json.dumps(w.digest),
            b',"v":',
            b"false" if w.active is False else b"true",
            b',"a":',
            w.attrs or b"null",
            b"}",
        )
    )


def recovered_create(graph_id: str, record: bytes) -> UserWrite | None:
    """The outcome an interrupted attempt had for an answered create, from its record."""
    try:
        doc = _json.loads(record)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("s"), str) or not doc["s"]:
        return None
    user_name = doc.get("u")
    digest = doc.get("d")
    attrs = doc.get("a")
    return UserWrite(
        graph_id,
        user_name if isinstance(user_name, str) else None,
        "create",
        "success",
        reason="created before the restart (recorded from the in-flight file)",
        scim_id=doc["s"],
        digest=digest if isinstance(digest, str) else None,
        attrs=_json.dumps(attrs) if isinstance(attrs, dict) else None,
        active=doc.get("v") is not False,
        link=True,
    )


def held_after(
    known: dict[str, Any] | None, update_values: dict[str, Any], changes: dict[str, Any]
) -> dict[str, Any]:
    """The values a target holds after a PATCH of ``changes`` (``None``: removed)."""
    if not known:
        held = dict(update_values)
    else:
        held = {**known, **update_values}
    for path, value in changes.items():
        if value is None:
            held.pop(path, None)
    return held


class Outcome:
    """What a write really did beyond success: values the target kept instead of the ones
    sent (path → kept value, ``None`` when absent), and warnings (the log's reason)."""

    __slots__ = ("kept", "notes")

    def __init__(self) -> None:
        self.kept: dict[str, Any] = {}
        self.notes: list[str] = []

    def note(self, text: str | None) -> None:
        if text:
            self.notes.append(text)

    @property
    def warning(self) -> str | None:
        return "; ".join(self.notes) if self.notes else None


def is_active(values: dict[str, Any]) -> bool:
    """Whether the account is active once ``values`` are sent (absent ``active``: it is)."""
    value = values.get("active", True)
    return value is not False


def modified_json(changes: dict[str, Any], redacted: frozenset[str] = frozenset()) -> str:
    """The log's modified properties: the values sent, secrets (redacted paths) masked."""
    shown = {k: ("[Redact]" if k in redacted else v) for k, v in changes.items()}
    return _json.dumps(shown).decode()
