"""The quarantine breaker: stop a run whose users fail en masse instead of hammering the target.

Entra's rule (facts.md §2.4, QUARANTINE, verbatim in spirit): "5,000 failures are the minimum
to start evaluating … If more than 40% of provisioning events fail, or there are more than
40,000 failures, the provisioning job will go into quarantine. Reference failures won't be
counted as part of the 40% threshold or 40,000 threshold … There's an absolute threshold of
60,000 failures that accounts for both reference and non-reference failures."

Those numbers are for tenants of 100k+ users; a 2,000-user run would never reach 5,000
failures, so the minimum is *scaled* to the run: evaluation starts at
``min(min_failures, max(floor, scale * events))`` failures, which is Entra's 5,000 from
``5,000 / scale`` events on (50,000 with the defaults) and ``floor`` for tiny runs. Set
``scale = 0`` for Entra's fixed minimum.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    min_failures: int = 5_000
    max_ratio: float = 0.40
    max_failures: int = 40_000
    absolute_failures: int = 60_000
    floor: int = 25
    scale: float = 0.10

    def verdict(self, successes: int, failures: int, reference_failures: int = 0) -> str | None:
        """Why the run must stop, or ``None`` (pure: the test vectors of facts.md §2.4)."""
        total = failures + reference_failures
        if total > self.absolute_failures:
            return (
                f"{total:,} failures (reference failures included) exceed the absolute "
                f"limit of {self.absolute_failures:,}"
            )
        events = successes + failures
        minimum = self.min_failures
        if self.scale > 0:
            minimum = min(minimum, max(self.floor, math.ceil(self.scale * events)))
        if failures < minimum:
            return None
        if failures > self.max_failures:
            return f"{failures:,} failures exceed {self.max_failures:,}"
        if events and failures / events > self.max_ratio:
            return (
                f"{failures:,} of {events:,} provisioning events failed "
                f"({failures / events:.0%} > {self.max_ratio:.0%})"
            )
        return None


@dataclass(slots=True)
class Breaker:
    """Counts outcomes of one run and says when it must stop.

    ``acknowledged``: the (shaped) reasons of a quarantine already reported, while the
    state stays in quarantine. The admin has read them and run the cycle again, so a
    failure for one of them does not stop the run a second time (Entra's quarantine email
    is "re-sent when the reason changes", and a job in quarantine keeps running its
    cycles, facts.md §2.4): such failures still fail and are escrowed, and they count like
    Entra's reference failures — toward the absolute limit only. A new reason stops the
    run as before.
    """

    policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    acknowledged: frozenset[str] = frozenset()
    successes: int = 0
    failures: int = 0
    acknowledged_failures: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def record(self, ok: bool, reason: str | None = None) -> str | None:
        """Count one outcome; return the quarantine reason when the threshold is passed."""
        if ok:
            self.successes += 1
            return None
        shaped = _shape(reason)
        self.reasons[shaped] += 1
        if shaped in self.acknowledged:
            self.acknowledged_failures += 1
        else:
            self.failures += 1
        return self.policy.verdict(self.successes, self.failures, self.acknowledged_failures)

    def top_reasons(self, top: int = 5) -> list[str]:
        """The commonest (shaped) reasons, as :meth:`report` lists them."""
        return [reason for reason, _ in self.reasons.most_common(top)]

    def report(self, verdict: str, top: int = 5) -> str:
        """The message a quarantined run stops with: the verdict and the commonest reasons."""
        head = (
            f"quarantined: {verdict}. The run stopped instead of hammering the target; "
            "fix the cause, then run `bulkprov sync` again (failed users wait in escrow and "
            "are retried by `bulkprov retry-failed`; a failure for a reason below does not "
            "stop a later run again)."
        )
        lines = [head, "most common failure reasons:"]
        lines += [f"  {n:>7,}  {reason}" for reason, n in self.reasons.most_common(top)]
        return "\n".join(lines)


def _shape(reason: str | None) -> str:
    """Group reasons that differ only by a user name or id (first 120 characters)."""
    if not reason:
        return "(no reason)"
    text = reason.split("'", 1)[0].split('"', 1)[0]
    return text[:120].strip() or reason[:120]
