"""Seeded fault injection for both simulators: the failures a provisioning client must survive.

This module owns :class:`Faults`, the hook both simulators consult around every API request
(and :class:`NoFaults`, the hook that does nothing), so neither simulator imports the other for
it. A :class:`FaultPlan` is such a hook. Each request is faulted with probability ``rate``; the
kind is drawn, with the same seeded generator, from the kinds in the plan that make sense for
that request:

=====================  =====================================================================
kind                   what the client sees
=====================  =====================================================================
``429``                429 with ``Retry-After`` (``retry_after`` seconds)
``429-bare``           429 without ``Retry-After`` (Zoom documents none, facts.md §6.6)
``500`` … ``504``      that 5xx; half of them *after* the request was processed (a create
                       that happened although the client was told it failed)
``reset``              the connection closes without an answer (before or after processing)
``timeout``            no answer for ``timeout_seconds`` (past the client's timeout), then
                       the connection drops; half of them after processing: the classic
                       unknown outcome of a create
``slow``               the answer comes ``slow_seconds`` late (still within the timeout)
``truncated``          the request is processed and the JSON body is cut in half
``malformed``          the request is processed and the body is not JSON at all
``401``                401 Invalid access token (one request only: a glitch, not a revocation;
                       a revoked token is :meth:`FaultPlan.revoke_after`'s job)
``pending``            Zoom's 400 for a pending user on a ``userName eq`` filter (§6.7: a
                       JSON-number ``status``)
``409``                409 uniqueness on a create, before or after processing it
=====================  =====================================================================

Kinds that need a body (``truncated``, ``malformed``) only hit answers that have one;
``pending`` only hits filter queries, ``409`` only creates. Everything is reproducible from
``seed``; :attr:`FaultPlan.injected` counts what was done, per kind.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from bulkprov.sim.http import DROP_CONNECTION, SimRequest, SimResponse

__all__ = ["ALL_KINDS", "GRAPH_KINDS", "SOAK_KINDS", "FaultPlan", "Faults", "NoFaults"]

ALL_KINDS: tuple[str, ...] = (
    "429",
    "429-bare",
    "500",
    "502",
    "503",
    "504",
    "reset",
    "timeout",
    "slow",
    "truncated",
    "malformed",
    "401",
    "pending",
    "409",
)
#: kinds a soak can inject at a steady rate and still expect every user to land; a 401 stops
#: the run on purpose (tested apart), everything else is retried, matched or escrowed
SOAK_KINDS: tuple[str, ...] = tuple(k for k in ALL_KINDS if k != "401")
#: kinds that make sense for Graph's ``/users`` pages (no creates, no filters)
GRAPH_KINDS: tuple[str, ...] = tuple(k for k in SOAK_KINDS if k not in ("pending", "409"))

_AFTER_ONLY = frozenset({"truncated", "malformed"})
_EITHER = frozenset({"500", "502", "503", "504", "reset", "timeout", "409"})
_SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> SimResponse:
    body = orjson.dumps({"schemas": [_SCIM_ERROR], "status": str(status), "detail": detail})
    return SimResponse(status, body, {"Content-Type": "application/scim+json", **(headers or {})})


class Faults(Protocol):
    """Fault-injection hook consulted around every API request (not the control endpoints).

    ``before`` may return a response to send instead of handling the request (a 500, a slow
    answer, a dropped write…); ``after`` sees the real response and may replace it (e.g. the
    create happened but the client is told 502: the classic duplicate-create trap).
    """

    def before(self, req: SimRequest) -> Awaitable[SimResponse | None]:
        """Return a response to short-circuit the request, or ``None`` to handle it."""
        ...

    def after(self, req: SimRequest, resp: SimResponse) -> Awaitable[SimResponse]:
        """Return the response to send (``resp`` unchanged by default)."""
        ...


class NoFaults:
    """A no-op :class:`Faults`: subclass it and override only what a test needs."""

    async def before(self, req: SimRequest) -> SimResponse | None:
        """Handle every request normally."""
        return None

    async def after(self, req: SimRequest, resp: SimResponse) -> SimResponse:
        """Send the real response."""
        return resp


@dataclass
class FaultPlan:
    """Inject faults into a fraction ``rate`` of API requests, reproducibly.

    Args:
        rate: probability that a request is faulted (0 … 1).
        kinds: the kinds to draw from (see the module docstring); default: every kind.
        seed: seeds the generator, so the same traffic meets the same faults.
        retry_after: the ``Retry-After`` of ``429`` faults (seconds, fractions allowed).
        timeout_seconds: how long a ``timeout`` fault keeps the client waiting.
        slow_seconds: the delay of a ``slow`` fault.
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = ALL_KINDS
    seed: int = 0
    retry_after: float = 0.05
    timeout_seconds: float = 2.0
    slow_seconds: float = 0.05
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.configure(rate=self.rate, kinds=self.kinds, seed=self.seed)
        self._after: dict[int, str] = {}

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings at run time (what ``POST /_sim/faults`` accepts); returns them."""
        allowed = {"rate", "kinds", "seed", "retry_after", "timeout_seconds", "slow_seconds"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(
                f"unknown fault setting(s) {sorted(unknown)}; expected {sorted(allowed)}"
            )
        rate = float(changes.get("rate", self.rate))
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        kinds = changes.get("kinds", self.kinds)
        if isinstance(kinds, str):
            kinds = [k for k in kinds.split(",") if k]
        bad = [k for k in kinds if k not in ALL_KINDS]
        if bad:
            raise ValueError(f"unknown fault kind(s) {bad}; expected some of {list(ALL_KINDS)}")
        self.rate, self.kinds = rate, tuple(kinds)
        for key in ("retry_after", "timeout_seconds", "slow_seconds"):
            if key in changes:
                setattr(self, key, float(changes[key]))
        if "seed" in changes or not hasattr(self, "_rng"):
            self.seed = int(changes.get("seed", self.seed))
            self._rng = random.Random(self.seed)
        return self.settings()

    def settings(self) -> dict[str, Any]:
        """The plan and what it injected so far (JSON-ready)."""
        return {
            "rate": self.rate,
            "kinds": list(self.kinds),
            "seed": self.seed,
            "retry_after": self.retry_after,
            "timeout_seconds": self.timeout_seconds,
            "slow_seconds": self.slow_seconds,
            "injected": dict(self.injected),
        }

    def _applicable(self, req: SimRequest) -> list[str]:
        out = []
        for kind in self.kinds:
            if kind == "pending" and not (
                req.method == "GET" and "username" in req.query.get("filter", "").lower()
            ):
                continue
            if kind == "409" and req.method != "POST":
                continue
            if kind in _AFTER_ONLY and req.method == "DELETE":
                continue
            out.append(kind)
        return out

    async def before(self, req: SimRequest) -> SimResponse | None:
        """Decide this request's fault; answer now if it strikes before processing."""
        if self.rate <= 0 or self._rng.random() >= self.rate:
            return None
        kinds = self._applicable(req)
        if not kinds:
            return None
        kind = self._rng.choice(kinds)
        self.injected[kind] += 1
        if kind in _AFTER_ONLY or (kind in _EITHER and self._rng.random() < 0.5):
            self._after[id(req)] = kind
            return None
        if kind == "slow":
            await asyncio.sleep(self.slow_seconds)
            return None
        return await self._strike(kind, req)

    async def after(self, req: SimRequest, resp: SimResponse) -> SimResponse:
        """Replace the real answer when this request's fault strikes after processing."""
        kind = self._after.pop(id(req), None)
        if kind is None:
            return resp
        if kind == "truncated":
            if len(resp.body) < 2:
                return SimResponse(resp.status, b"{", resp.headers)
            return SimResponse(resp.status, resp.body[: len(resp.body) // 2], resp.headers)
        if kind == "malformed":
            return SimResponse(resp.status, b"<html>upstream error</html>", resp.headers)
        return await self._strike(kind, req)

    async def _strike(self, kind: str, req: SimRequest) -> SimResponse:
        if kind == "429":
            return _error(
                429, "Too many requests (injected)", {"Retry-After": f"{self.retry_after:g}"}
            )
        if kind == "429-bare":
            return _error(429, "Too many requests (injected)")
        if kind in ("500", "502", "503", "504"):
            return _error(int(kind), f"injected {kind}")
        if kind == "reset":
            return SimResponse(DROP_CONNECTION)
        if kind == "timeout":
            await asyncio.sleep(self.timeout_seconds)
            return SimResponse(DROP_CONNECTION)
        if kind == "401":
            return _error(401, "Invalid access token.", {"WWW-Authenticate": "Bearer"})
        if kind == "pending":
            # Zoom's quirk: a 400 with a JSON-number status for a pending user (facts.md §6.7)
            name = req.query.get("filter", "").rpartition(" ")[2].strip('"')
            body = orjson.dumps(
                {
                    "schemas": [_SCIM_ERROR],
                    "status": 400,
                    "detail": f"User {name} not exist or not belong to this account.",
                }
            )
            return SimResponse(400, body, {"Content-Type": "application/scim+json"})
        if kind == "409":
            return _error(409, "User already exists (injected)")
        raise AssertionError(kind)  # pragma: no cover - kinds are validated in configure

    @classmethod
    def parse(
        cls, rate: float, kinds: Iterable[str] | str | None, seed: int, **kw: Any
    ) -> FaultPlan:
        """A plan from command-line values (``kinds`` comma-separated or a list)."""
        plan = cls(seed=seed, **kw)
        plan.configure(rate=rate, kinds=kinds if kinds else ALL_KINDS)
        return plan
