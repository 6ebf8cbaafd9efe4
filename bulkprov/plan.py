"""``bulkprov plan`` and ``bulkprov apply``: see what a sync would do, then do exactly that.

A plan is computed the way a sync decides, with the same pieces (:class:`Engine` for
scope and mapping, :func:`~bulkprov.decide.decide`), from the same inputs: every Graph
user (a full read, so managed accounts whose user Graph no longer lists show as
disables, as a full sync's sweep would do), the app's assignments (scope mode
"assigned"), the state database, and — when a sync would match (first run, ``--rematch``) — the
target's listing, held in memory. It sends no write to the target and writes nothing to
the state.

The plan file (JSON) holds:

* ``counts``: users per action (create, update, link, disable, skip, failed);
* ``note``: set when the disables exceed the accidental-deletion threshold (a sync would
  stage and hold them for ``bulkprov approve``);
* ``operations``: one entry per user a sync would write for — action, reason, the SCIM id
  (a placeholder ``new:N`` for creates), and the changes a PATCH would carry (values of
  ``Redact`` mappings shown as ``[Redact]``);
* fingerprints: one per operation (a digest of the user's mapped values, or of the scope
  decision for a disable), a digest over *every* source user's fingerprint and decision
  (so a change to a user the plan skips is noticed too), the state's last run and last
  user update, and a digest of the config parts that shape decisions.

No secret is in it: not the Graph client secret, not the SCIM token, not a token URL.

``apply`` recomputes the plan and refuses (:class:`~bulkprov.errors.PlanStale`, exit 7)
unless everything matches; then it runs the sync with a guard that lets through only the
plan's own operations, so a user that changes in the seconds between the check and the
write is held back (logged as skipped), never sent something the plan did not show.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from . import _json
from .checkpoint.store import StateStore
from .clients import open_clients
from .config import Config
from .decide import Decision, decide
from .errors import PlanStale, StateError, UserDataError
from .graph.directory import ScopeSources, read_sources
from .mapping import MappedUser
from .mapping.compiler import REDACTED
from .pipeline import Engine, Guard, Secrets
from .retry import RetryPolicy
from .scim import requests as rq
from .scim.client import ScimClient
from .scim.paths import get_value
from .scim.responses import list_resources

PLAN_FORMAT = "bulkprov-plan/1"
ACTIONS = ("create", "update", "link", "disable", "skip", "failed")


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(_json.dumps_sorted(list(parts)), digest_size=16).hexdigest()


def user_fingerprint(graph_id: str, mapped: MappedUser | None, scope_reason: str) -> str:
    """What the plan saw of one user: its mapped values, or why it is out of scope."""
    if mapped is not None:
        return _digest(graph_id, mapped.values, mapped.update_values)
    return _digest(graph_id, "out of scope", scope_reason)


def config_fingerprint(cfg: Config) -> str:
    """The config parts that shape decisions (mappings, scope, the target and its dialect)."""
    return _digest(
        [m.model_dump(mode="json") for m in cfg.mappings],
        cfg.scope.model_dump(mode="json"),
        cfg.target.base_url,
        cfg.target.patch_dialect,
        cfg.graph.base_url,
        cfg.graph.tenant_id,
    )


@dataclass(slots=True)
class _Planner:
    engine: Engine
    store: StateStore
    index: dict[str, tuple[str, dict[str, Any]]] | None
    sources: ScopeSources

    async def page(
        self, users: list[Any], out: list[dict[str, Any]], seen: dict[str, str], names: set[str]
    ) -> None:
        engine = self.engine
        evaluated: list[tuple[str, bool, str, MappedUser | None]] = []
        for user in users:
            gid = user.get("id") if isinstance(user, dict) else None
            try:
                if not isinstance(user, dict):
                    raise UserDataError("the Graph page holds something that is not a user")
                evaluated.append(engine.evaluate(user, self.sources))
            except UserDataError as exc:
                key = str(gid) if isinstance(gid, str) else f"(unreadable #{len(seen)})"
                seen[key] = _digest(key, "failed", str(exc))
                out.append(
                    {"graph_id": key, "action": "failed", "reason": str(exc), "user_name": None}
                )
        states = await self.store.lookup_users([e[0] for e in evaluated])
        redacted = engine.mapper.redacted_paths
        for graph_id, in_scope, reason, mapped in evaluated:
            state = states.get(graph_id)
            fingerprint = user_fingerprint(graph_id, mapped, reason)
            user_name = mapped.user_name if mapped else (state.user_name if state else None)
            if mapped is not None and mapped.user_name:
                low = mapped.user_name.lower()
                if low in names:
                    seen[graph_id] = _digest(fingerprint, "failed")
                    out.append(
                        {
                            "graph_id": graph_id,
                            "user_name": user_name,
                            "action": "failed",
                            "reason": f"userName {mapped.user_name!r} is mapped from another "
                            "user too",
                        }
                    )
                    continue
                names.add(low)
            match = None
            if mapped is not None and self.index is not None and state is None:
                for key in engine.match_keys(mapped):
                    if key in self.index:
                        match = self.index[key]
                        break
            d = decide(
                in_scope=in_scope,
                scope_reason=reason,
                update_values=mapped.update_values if mapped else None,
                digest=mapped.digest if mapped else None,
                state=state,
                match=match,
            )
            seen[graph_id] = _digest(fingerprint, d.kind, d.scim_id, d.changes)
            if d.kind == "skip":
                continue
            entry: dict[str, Any] = {
                "graph_id": graph_id,
                "user_name": user_name,
                "action": d.kind,
                "reason": d.reason,
                "scim_id": d.scim_id,
                "fingerprint": fingerprint,
            }
            if d.kind == "create":
                assert mapped is not None
                entry["values"] = {
                    k: (REDACTED if k in redacted else v) for k, v in mapped.values.items()
                }
            else:
                entry["changes"] = {
                    k: (REDACTED if k in redacted else v) for k, v in d.changes.items()
                }
            out.append(entry)


async def _target_index(
    engine: Engine, scim: ScimClient, page_size: int
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The target's accounts by matching key (in memory: a plan writes no state)."""
    index: dict[str, tuple[str, dict[str, Any]]] = {}
    start = 1
    while True:
        resources, total = list_resources(await scim.send(rq.list_users(start, page_size)))
        for res in resources:
            scim_id = res.get("id")
            if not isinstance(scim_id, str):
                continue
            for path in engine.mapper.matching:
                value = get_value(res, path)
                if isinstance(value, str) and value:
                    index[f"{path}\x00{value.lower()}"] = (scim_id, res)
        start += len(resources)
        if not resources or start > total:
            return index


async def make_plan(
    cfg: Config,
    secrets: Secrets,
    *,
    rematch: bool = False,
    engine: Engine | None = None,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    scim_transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Compute what a sync would do now (reads only)."""
    engine = engine or Engine(cfg)
    async with await StateStore.open(cfg.state.path) as store:
        last = await store.last_run()
        if last is not None and last.status == "running":
            raise StateError(
                f"run {last.id} is in progress or was interrupted: finish it with "
                "`bulkprov sync` (it resumes), then make the plan"
            )
        users, updated_at = await store.users_fingerprint()
        matching = rematch or not await store.has_completed_run()
        async with open_clients(
            cfg,
            secrets,
            graph_transport=graph_transport,
            scim_transport=scim_transport,
            policy=policy,
            rate_limit=cfg.target.rate_limit,
        ) as (graph, scim):
            sources = await read_sources(
                graph,
                mode=cfg.scope.mode,
                service_principal_id=cfg.scope.service_principal_id,
                groups=False,
                flatten=cfg.groups.flatten_nested,
            )
            index = None
            if matching:
                index = await _target_index(engine, scim, cfg.target.list_page_size)
            planner = _Planner(engine, store, index, sources)
            ops: list[dict[str, Any]] = []
            seen: dict[str, str] = {}
            names: set[str] = set()
            first = graph.users_url(engine.select, cfg.graph.page_size)
            async for page in graph.pages(first):
                await planner.page(page.users, ops, seen, names)
            # A full read's sweep: managed accounts whose user Graph no longer lists.
            gone_reason = "no longer listed by Microsoft Graph (deleted)"
            for graph_id, scim_id, user_name in await store.active_managed():
                if graph_id in seen:
                    continue
                fingerprint = user_fingerprint(graph_id, None, gone_reason)
                seen[graph_id] = _digest(fingerprint, "disable", scim_id)
                ops.append(
                    {
                        "graph_id": graph_id,
                        "user_name": user_name,
                        "action": "disable",
                        "reason": gone_reason,
                        "scim_id": scim_id,
                        "fingerprint": fingerprint,
                        "changes": {"active": False},
                    }
                )
    counts = Counter(dict.fromkeys(ACTIONS, 0))
    counts.update(op["action"] for op in ops)
    counts["skip"] = len(seen) - len(ops)
    new = itertools.count(1)
    for op in ops:
        if op["action"] == "create":
            op["scim_id"] = f"new:{next(new)}"
    dp = cfg.deprovision
    held = dp.prevent_accidental_deletion and counts["disable"] > dp.threshold
    return {
        "format": PLAN_FORMAT,
        "note": (
            f"{counts['disable']} disables exceed the accidental-deletion threshold "
            f"({dp.threshold}): a sync would stage and hold them for `bulkprov approve`"
            if held
            else None
        ),
        "rematch": rematch,
        "matching": matching,
        "counts": dict(counts),
        "fingerprints": {
            "config": config_fingerprint(cfg),
            "source": _digest(sorted(seen.items())),
            "source_users": len(seen),
            "state": {
                "last_run": last.id if last else None,
                "last_run_status": last.status if last else None,
                "users": users,
                "users_updated_at": updated_at,
            },
        },
        "operations": ops,
    }


def _comparable(plan: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (op["graph_id"], op["action"], op.get("fingerprint"), _json.dumps(op.get("changes")))
        for op in plan["operations"]
    ]


def check_plan(plan: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Why ``plan`` no longer describes ``fresh`` (an empty list: it does)."""
    if plan.get("format") != PLAN_FORMAT:
        return [f"not a {PLAN_FORMAT} file (format {plan.get('format')!r})"]
    old, new = plan["fingerprints"], fresh["fingerprints"]
    problems = []
    if old["config"] != new["config"]:
        problems.append("the configuration (mappings, scope or target) changed")
    if old["state"] != new["state"]:
        problems.append(
            f"the state moved on (last run {old['state']['last_run']} → "
            f"{new['state']['last_run']}, managed users {old['state']['users']} → "
            f"{new['state']['users']})"
        )
    if old["source"] != new["source"]:
        a, b = set(_comparable(plan)), set(_comparable(fresh))
        changed = sorted({x[0] for x in a ^ b})
        detail = f"; operations differ for {len(changed)} user(s)" if changed else ""
        problems.append(
            f"the source changed ({old['source_users']} → {new['source_users']} users{detail})"
        )
    return problems


def plan_guard(plan: dict[str, Any], engine: Engine) -> Guard:
    """A guard for ``run_sync`` that lets through only the plan's own operations."""
    expected = {op["graph_id"]: (op["action"], op["fingerprint"]) for op in plan["operations"]}

    def guard(graph_id: str, decision: Decision, mapped: MappedUser | None) -> str | None:
        want = expected.get(graph_id)
        if want is None:
            return f"not in the plan (would {decision.kind}): held back; make a new plan"
        reason = decision.reason if mapped is None else ""
        got = (decision.kind, user_fingerprint(graph_id, mapped, reason))
        if got != want:
            return f"changed since the plan (would {decision.kind}): held back; make a new plan"
        return None

    return guard


async def verify_plan(
    cfg: Config, secrets: Secrets, plan: dict[str, Any], **options: Any
) -> dict[str, Any]:
    """Recompute the plan and raise :class:`PlanStale` unless it still holds."""
    if plan.get("format") != PLAN_FORMAT:
        raise PlanStale(f"not a {PLAN_FORMAT} file (format {plan.get('format')!r})")
    fresh = await make_plan(cfg, secrets, rematch=bool(plan.get("rematch")), **options)
    problems = check_plan(plan, fresh)
    if problems:
        raise PlanStale(
            "the plan is out of date, nothing was sent: "
            + "; ".join(problems)
            + " — run `bulkprov plan` again"
        )
    return fresh


def summary(plan: dict[str, Any]) -> str:
    c = plan["counts"]
    return ", ".join(f"{k} {c.get(k, 0):,}" for k in ACTIONS)
