"""``bulkprov provision USER`` and ``bulkprov test-connection``: the guide's test recipes.

Provision on demand runs the whole path for one user now and reports Entra's steps
(ONDEMAND, facts.md): import the user from Graph, determine scope (naming the deciding
clause), match it in the target, perform the action, and the modified properties. It uses
the sync's own evaluation, decision and SCIM code (:class:`~bulkprov.pipeline.decide.Engine`,
:class:`~bulkprov.pipeline.workers.Applier`), so what it shows is what a cycle would do; its
log entries are recorded under run 0 (no cycle state changes, an interrupted sync still
resumes).

Test connection does what Entra's button does (SCIMTUT, facts.md §2.1): a Graph token and
one read, then a query of the target for a random userName that must answer 200 with an
empty ListResponse. Each failure names its likely cause. Under the Zoom profile the random
userName is an email (Zoom's filter takes one), and Zoom's pending-user 400 ("… not exist or
not belong to this account.", which Zoom also answers for userNames it holds no account for,
devforum 7646) counts as a working endpoint: the token, the URL and the filter all worked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from bulkprov import _json, credentials
from bulkprov.checkpoint.lock import StateLock
from bulkprov.checkpoint.store import Run, StateStore
from bulkprov.config import Config
from bulkprov.credentials import Secrets
from bulkprov.errors import (
    PendingInvitation,
    SourceAuthError,
    SourceError,
    TargetAuthError,
    TargetDailyLimit,
    TargetError,
    TargetProxyError,
    TargetRejected,
    TargetStop,
    TargetTLSError,
)
from bulkprov.graph.directory import read_sources
from bulkprov.pipeline.clients import QUICK, open_clients
from bulkprov.pipeline.decide import Decision, Engine, user_name_of
from bulkprov.pipeline.matching import Claims
from bulkprov.pipeline.messages import WorkItem
from bulkprov.pipeline.workers import Applier
from bulkprov.redact import clip
from bulkprov.retry import RetryPolicy
from bulkprov.scim import requests as rq
from bulkprov.scim.client import ScimClient
from bulkprov.scim.responses import is_pending_invitation
from bulkprov.transport import show_proxy, tls_failure

#: the on-demand actions' log entries carry this run id
ON_DEMAND_RUN = 0

#: ``bulkprov provision`` of a user Entra ID does not have: a bad argument (as click's 2)
USER_UNKNOWN = 2
#: ``bulkprov provision``: the target refused this user's operation (as a sync whose users
#: failed)
USER_FAILED = 10


@dataclass(slots=True)
class Step:
    title: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)
    #: a failed step: the exit code of README's table it stands for (3 refused credentials,
    #: 4 Graph, 5 the target, 2 a user Entra ID does not have, 10 the user failed)
    exit_code: int = 0


async def provision_user(
    cfg: Config,
    secrets: Secrets,
    key: str,
    *,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    scim_transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
) -> list[Step]:
    """Provision one user (UPN or object id) now; returns Entra's steps."""
    engine = Engine(cfg)
    steps: list[Step] = []
    with StateLock(cfg.state.path):
        store = await StateStore.open(cfg.state.path, verify=True)
        async with (
            store,
            open_clients(
                cfg,
                secrets,
                graph_transport=graph_transport,
                scim_transport=scim_transport,
                policy=policy,
                scim_policy=QUICK,
            ) as (
                graph,
                scim,
            ),
        ):
            select = ",".join(engine.select)
            try:
                user = await graph.get_json(
                    f"{graph.base_url}/users/{quote(key, safe='@')}?$select={select}"
                )
            except SourceError as exc:
                if exc.status != 404:
                    raise
                steps.append(
                    Step(
                        "Import user",
                        False,
                        f"no user {key!r} in Entra ID (give a userPrincipalName or an object id)",
                        exit_code=USER_UNKNOWN,
                    )
                )
                return steps
            user.pop("@odata.context", None)
            steps.append(
                Step(
                    "Import user",
                    True,
                    f"retrieved {user.get('userPrincipalName')} ({user.get('id')}) "
                    "from Microsoft Graph",
                    {k: user.get(k) for k in engine.select},
                )
            )
            sources = await read_sources(
                graph,
                mode=cfg.scope.mode,
                service_principal_id=cfg.scope.service_principal_id,
                groups=False,
                flatten=cfg.groups.flatten_nested,
            )
            evaluated = engine.evaluate(user, sources)
            graph_id, in_scope, reason, mapped = evaluated
            steps.append(Step("Determine if user is in scope", in_scope, reason))
            run = Run(ON_DEMAND_RUN, "running", None, 0, 0, {}, 0.0)
            apply = Applier(engine, scim, store, Claims(), escrow={})
            state = (await store.lookup_users([graph_id])).get(graph_id)
            match = None
            if state is not None and state.scim_id:
                how = f"linked to target account {state.scim_id} by an earlier provisioning"
            elif mapped is not None:
                try:
                    found = await apply.find(mapped)
                except PendingInvitation as exc:
                    item = WorkItem(0, graph_id, mapped.user_name, Decision("create"), mapped, None)
                    reason = apply.pending(item, exc).reason or str(exc)
                    steps.append(Step("Match user between source and target system", False, reason))
                    return steps
                if found is not None:
                    match = (str(found["id"]), found)
                    how = f"matched target account {found['id']} by the matching attributes"
                else:
                    how = f"no target account matches (userName {mapped.user_name!r})"
            else:
                how = "not looked up: the user is out of scope and was never provisioned"
            steps.append(Step("Match user between source and target system", True, how))
            # a user Graph answers for is not hard-deleted (that one would be a 404 above)
            decision = engine.decide(evaluated, state, match, hard_deleted=False)
            user_name = user_name_of(mapped, state)
            if decision.kind == "skip":
                steps.append(Step("Perform action", True, f"skipped: {decision.reason}"))
                return steps
            item = WorkItem(0, graph_id, user_name, decision, mapped, state)
            try:
                write = await apply.apply(item)
            except TargetStop:
                raise
            except TargetError as exc:
                steps.append(
                    Step(
                        "Perform action",
                        False,
                        f"{decision.kind} failed: {exc}",
                        exit_code=USER_FAILED,
                    )
                )
                return steps
            await store.write_batch(run, [(None, write)], {}, None)
            steps.append(
                Step("Perform action", True, f"{write.action}: {write.reason or decision.reason}")
            )
            modified = _json.loads(write.modified) if write.modified else {}
            steps.append(
                Step(
                    "Modified properties",
                    True,
                    ", ".join(sorted(modified)) or "none",
                    modified,
                )
            )
    return steps


def graph_probes(cfg: Config, base_url: str) -> list[tuple[str, str, dict[str, str]]]:
    """(what, URL, headers) of one page of every Graph read a sync of ``cfg`` makes:
    ``users/delta``, ``groups/delta`` when groups are provisioned or the scope is the
    assigned users, and the service principal with its assignments in scope mode
    "assigned". Each asks for one item: a probe, not a read."""
    one = {"Prefer": "odata.maxpagesize=1"}
    probes = [("users (users/delta)", f"{base_url}/users/delta?$select=id", one)]
    if cfg.scope.mode == "assigned" or cfg.groups.enabled:
        probes.append(
            (
                "groups and members (groups/delta)",
                f"{base_url}/groups/delta?$select=displayName&$expand=members",
                one,
            )
        )
    if cfg.scope.mode == "assigned":
        sp = quote(str(cfg.scope.service_principal_id), safe="")
        probes.append(
            (
                "the app's assignments (servicePrincipals/{id})",
                f"{base_url}/servicePrincipals/{sp}?$select=id,appRoles",
                {},
            )
        )
        probes.append(("", f"{base_url}/servicePrincipals/{sp}/appRoleAssignedTo?$top=1", {}))
    return probes


async def check_connection(
    cfg: Config,
    secrets: Secrets,
    *,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    scim_transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
) -> list[Step]:
    """Check Graph (a token, then one page of every read a sync makes with this config)
    and the SCIM target (a query for a random userName).

    A failed step names its cause and carries the exit code of README's table: refused
    credentials 3, Graph 4, the target 5; a certificate that cannot be verified is named
    as TLS (:func:`bulkprov.transport.tls_failure`), never as a refused token.
    """
    steps: list[Step] = []
    network = credentials.proxies(cfg, secrets)

    def via(url: str) -> str:
        proxy = network.for_url(url)
        return f" (through the proxy {show_proxy(proxy)})" if proxy else ""

    quick = policy or RetryPolicy(max_attempts=2, max_seconds=10.0)
    async with open_clients(
        cfg,
        secrets,
        graph_transport=graph_transport,
        scim_transport=scim_transport,
        policy=quick,
        scim_policy=QUICK,
    ) as (graph, scim):
        try:
            await graph.token()
            steps.append(
                Step(
                    "Graph token",
                    True,
                    f"issued for tenant {cfg.graph.tenant_id}{via(cfg.graph.authority)}",
                )
            )
        except SourceAuthError as exc:
            steps.append(Step("Graph token", False, f"{exc}", exit_code=exc.exit_code))
        except SourceError as exc:
            hint = "" if tls_failure(exc) else " — check graph.authority and the network"
            steps.append(Step("Graph token", False, f"{exc}{hint}", exit_code=exc.exit_code))
        if steps[-1].ok:
            read = []
            try:
                for what, url, headers in graph_probes(cfg, graph.base_url):
                    await graph.get_json(url, headers=headers)
                    read += [what] if what else []
                steps.append(Step("Graph read", True, f"{', '.join(read)} can be read"))
            except SourceError as exc:
                steps.append(Step("Graph read", False, f"{exc}", exit_code=exc.exit_code))
        steps.append(await _check_target(cfg, scim, via(cfg.target.base_url)))
    return steps


async def _check_target(cfg: Config, scim: ScimClient, via: str = "") -> Step:
    """Entra's probe of the target: a query for a random userName, an empty ListResponse.

    ``via`` says which proxy the request goes through (empty: none). Under the Zoom
    profile the userName is an email, and Zoom's pending-user 400 is a working endpoint."""
    zoom = cfg.target.zoom_profile
    probe = f"bulkprov-probe-{uuid.uuid4().hex}@example.invalid" if zoom else str(uuid.uuid4())
    url = cfg.target.base_url
    try:
        doc = await scim.send(rq.find_users("userName", probe))
    except TargetError as exc:
        if isinstance(exc, TargetDailyLimit):  # before TargetAuthError: it is not the token
            return Step("SCIM target", False, str(exc), exit_code=exc.exit_code)
        if isinstance(exc, TargetProxyError):  # before TargetAuthError: it is not the token
            return Step(
                "SCIM target",
                False,
                f"{exc} — check [network] or HTTPS_PROXY",
                exit_code=exc.exit_code,
            )
        if (tls := tls_failure(exc)) is not None or isinstance(exc, TargetTLSError):
            return Step(
                "SCIM target",
                False,
                f"TLS: the certificate of {url} cannot be verified ({tls or exc}) — give its "
                "CA in target.ca_file (TLS verification is never turned off)",
                exit_code=exc.exit_code,
            )
        if isinstance(exc, TargetAuthError):
            return Step(
                "SCIM target",
                False,
                f"the token was refused ({exc.status}): it is wrong, expired or revoked — "
                "generate a new token (Zoom: a SCIM2 app's token) and set it again",
                exit_code=exc.exit_code,
            )
        if zoom and isinstance(exc, TargetRejected) and is_pending_invitation(exc):
            return Step(
                "SCIM target",
                True,
                f'GET /Users?filter=userName eq "{probe}" → 400 "{exc.detail}": '
                "Zoom's answer for a userName it holds no account for (as for a "
                "pending invitation) — the endpoint, the token and the filter work" + via,
            )
        if isinstance(exc, TargetRejected):
            cause = (
                f"no SCIM endpoint at {url}/Users — check target.base_url (the Tenant URL, "
                "e.g. https://api.zoom.us/scim2)"
                if exc.status in (404, 405)
                else f"the target rejected a userName query ({exc}); it must support "
                '`filter=userName eq "…"`'
            )
            return Step("SCIM target", False, cause, exit_code=exc.exit_code)
        return Step(
            "SCIM target",
            False,
            f"cannot reach {url} ({exc}) — check target.base_url and the network",
            exit_code=exc.exit_code,
        )
    ok = (
        isinstance(doc, dict)
        and isinstance(doc.get("schemas"), list)
        and "urn:ietf:params:scim:api:messages:2.0:ListResponse" in doc["schemas"]
        and str(doc.get("totalResults")) == "0"
    )
    if not ok:
        return Step(
            "SCIM target",
            False,
            "the answer to a query for a random userName is not an empty SCIM "
            'ListResponse (Entra reports this as "Request is unparsable, '
            'syntactically incorrect, or violates schema") — the endpoint at '
            f"{url} is not SCIM 2.0 compatible, or the URL points elsewhere",
            # scrubbed before the cut: a cut through an echoed token would show its start
            {"answer": clip(str(doc), 200)},
            exit_code=TargetError.exit_code,
        )
    return Step(
        "SCIM target",
        True,
        f'GET /Users?filter=userName eq "{probe}" → 200, empty ListResponse{via}',
    )
