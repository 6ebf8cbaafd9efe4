"""The seat guard (profile "zoom"): never take Licensed users past the seats bought, nor
Basic users past Zoom's cap.

The admin guide says to monitor the licence allocation; Entra logs a user it cannot give a
licence to as ``LicenseLimitExceeded`` (facts.md §6.8). bulkprov counts, per seat type, the
active accounts it manages that hold it (their last values sent, read from the state at the
start of a run), and each create, update or link that would give a user a type whose seats
are all used is held: Skipped, counted as staged, with the reason ``LicenseLimitExceeded``,
recorded in ``waiting`` (``license``) and looked at again every cycle. What fits is
provisioned. At ``[target.zoom] seat_warning`` (90 %) of a pool the run says so.

Pools: Licensed (``licensed_seats``, not guarded when unset) and Basic (``basic_cap``:
9,999, "Zoom only allows a maximum of 9,999 basic users today", Entra's Zoom tutorial).
Only users whose mapping gives a ``userType`` are counted: Zoom's list omits licence fields
(facts.md §6.8), so accounts bulkprov does not manage are not counted; set
``licensed_seats`` to the seats left for bulkprov's users. Pure but for :meth:`Seats.load`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bulkprov.checkpoint.store import StateStore, UserState
from bulkprov.config import Config
from bulkprov.mapping import MappedUser
from bulkprov.pipeline.decide import Decision
from bulkprov.scim.requests import zoom_user_type

#: the guarded pools, in display order
POOLS = ("Licensed", "Basic")
LICENSE_LIMIT = "LicenseLimitExceeded"


def seat_type(values: Mapping[str, Any] | None) -> str | None:
    """The Zoom ``userType`` ``values`` give (Pro and Corp read as Licensed and On-Prem)."""
    if not values:
        return None
    value, _ = zoom_user_type(values.get("userType"))
    return value if isinstance(value, str) else None


class Seats:
    """Seats used and the caps of the guarded pools, for one run."""

    def __init__(self, caps: Mapping[str, int], used: Mapping[str, int], warn_at: float) -> None:
        self.caps = dict(caps)
        self.used = {pool: int(used.get(pool, 0)) for pool in self.caps}
        self.warn_at = warn_at
        #: users held for want of a seat, per pool
        self.held = dict.fromkeys(self.caps, 0)

    @classmethod
    async def load(cls, cfg: Config, store: StateStore, *, held: bool = False) -> Seats | None:
        """The guard of a Zoom-profile run (``None`` for another profile).

        ``held``: count the users held now (``waiting``, ``license``) per pool, as status
        and the report show them; a run counts the ones it holds itself."""
        if not cfg.target.zoom_profile:
            return None
        zoom = cfg.target.zoom
        caps = {"Licensed": zoom.licensed_seats, "Basic": zoom.basic_cap}
        guarded = {pool: cap for pool, cap in caps.items() if cap is not None}
        used: dict[str, int] = {}
        for attrs in await store.active_attrs():
            kind = seat_type(attrs)
            if kind in guarded:
                used[kind] = used.get(kind, 0) + 1
        seats = cls(guarded, used, zoom.seat_warning)
        if held:
            for w in (await store.waiting("license")).values():
                pool = next((p for p in guarded if f"no {p} seat" in (w.detail or "")), None)
                if pool is None:  # Zoom's own answer: the pool is not named
                    pool = "Licensed" if "Licensed" in guarded else next(iter(guarded), None)
                if pool is not None:
                    seats.held[pool] += 1
        return seats

    def hold(
        self, decision: Decision, mapped: MappedUser | None, state: UserState | None
    ) -> str | None:
        """Take the seat this decision needs; the reason to hold the user when none is left."""
        if decision.kind not in ("create", "update", "link") or mapped is None:
            return None
        new = seat_type(mapped.update_values if decision.kind != "create" else mapped.values)
        old = seat_type(state.attrs) if state is not None and state.active else None
        if new == old or new not in self.caps:
            if old in self.caps and new != old:
                self.used[old] -= 1
            return None
        cap = self.caps[new]
        if self.used[new] >= cap:
            self.held[new] += 1
            return (
                f"staged: {LICENSE_LIMIT}: no {new} seat left ({self.used[new]:,} of {cap:,} "
                f"used; [target.zoom] {'licensed_seats' if new == 'Licensed' else 'basic_cap'})"
                f". Free or buy {new} seats in Zoom, or raise the setting; bulkprov "
                "provisions the user in a later cycle"
            )
        self.used[new] += 1
        if old in self.caps:
            self.used[old] -= 1
        return None

    def figures(self) -> dict[str, dict[str, int]]:
        """Per pool: used, left, cap and users held (status, the report, the metrics)."""
        return {
            pool: {
                "used": self.used[pool],
                "left": max(0, cap - self.used[pool]),
                "cap": cap,
                "held": self.held[pool],
            }
            for pool, cap in self.caps.items()
        }

    def warnings(self) -> list[str]:
        """A warning per pool used at ``warn_at`` or more, or with users held."""
        out = []
        for pool, f in self.figures().items():
            cap = f["cap"]
            if f["held"]:
                out.append(
                    f"{f['held']:,} user(s) held ({LICENSE_LIMIT}): all {cap:,} {pool} seats "
                    "are used"
                )
            elif cap and f["used"] >= self.warn_at * cap:
                out.append(
                    f"{pool} seats: {f['used']:,} of {cap:,} used ({f['used'] / cap:.0%}), "
                    f"{f['left']:,} left"
                )
        return out


def no_seat_reason(detail: str) -> str:
    """The held reason when the target itself answers that no licence is available."""
    return (
        f"staged: {LICENSE_LIMIT}: Zoom answered that no licence is available ({detail!r}). "
        "Free or buy seats in Zoom; bulkprov provisions the user in a later cycle"
    )
