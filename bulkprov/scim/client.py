"""Send SCIM requests: the rate limiter, the shared pause gate and the retry loop.

Every request of every worker goes through :meth:`ScimClient.send`, which

1. waits for the shared :class:`~bulkprov.retry.PauseGate` (a Retry-After pauses everyone),
2. takes a send slot from the shared :class:`~bulkprov.scim.rate.RatePacer` of the
   request's *label* (AIMD: below the ceiling, adapted to the 429s the target sends), then
   acquires that label's shared ``aiolimiter.AsyncLimiter``: the hard guarantee that all
   workers together never exceed the rate the admin set, whatever the pacer does (it
   measures the event loop's own time: real time, whatever ``clock`` is given). An RFC
   target has one label (``rate_limit``); Zoom counts requests per rate-limit label, each
   with its own limit (``labels``: Light and Medium, facts.md §6.6), so each label has its
   own pacer and limiter, and a 429 slows only the label it was answered for,
3. sends, and classifies the answer with :func:`bulkprov.scim.responses.classify`,
4. retries 429, 5xx, timeouts and resets with backoff, bounded by attempts and time; a
   429 that says the *daily* limit is spent stops the run at once (TargetDailyLimit),
   resumable, instead of retrying until the limit resets.
   A 429 means "not yet", not "failed": throttled retries are bounded by time only
   (``max_retry_seconds``), so a busy target slows the run instead of failing users. With
   an adaptive pacer a 429 without Retry-After is retried at the next (slower) paced slot.
5. with an OAuth token source (Zoom server-to-server), asks it for the current token first,
   and meets a 401 with one fresh token and one retry before stopping the run.

A request that *creates* (POST) is never retried blindly after an unknown outcome (5xx,
timeout, reset): it raises :class:`OutcomeUnknown` so the caller resolves it by matching.

Every wait (the gate, the pacer's slots, backoff) and the retry budget read the ``clock``
given (:class:`bulkprov.retry.Clock`; the system's by default), so tests run them on a fake one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from pydantic import SecretStr

from bulkprov import redact
from bulkprov.credentials.target import TokenSource
from bulkprov.errors import (
    OutcomeUnknown,
    TargetAuthError,
    TargetDailyLimit,
    TargetError,
    TargetProxyError,
    TargetRejected,
    TargetStop,
    TargetThrottled,
    TargetTLSError,
    TargetUnavailable,
)
from bulkprov.retry import SYSTEM_CLOCK, Clock, PauseGate, RetryPolicy
from bulkprov.scim.bulk import MAX_OPERATIONS, BulkSupport, bulk_support, service_provider_config
from bulkprov.scim.rate import RatePacer
from bulkprov.scim.requests import RateLabel, ScimRequest, zoom_label
from bulkprov.scim.responses import classify
from bulkprov.transport import USER_AGENT, AnswerTooLarge, Bounds, describe, fetch

SCIM_MEDIA_TYPE = "application/scim+json"

__all__ = ["SCIM_MEDIA_TYPE", "OutcomeUnknown", "RequestStats", "ScimClient"]


class RequestStats:
    """Counters the progress display and the run report read."""

    __slots__ = ("by_label", "by_method", "requests", "retries", "throttled")

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.throttled = 0
        self.by_method: dict[str, int] = {}
        #: requests per rate-limit label (profile "zoom": light, medium)
        self.by_label: dict[str, int] = {}


class _Label:
    """One rate-limit label's pacer and limiter (the RFC profile has one: ``all``)."""

    __slots__ = ("limiter", "pacer")

    def __init__(self, rate: float, adaptive: bool) -> None:
        self.pacer = RatePacer(rate, adaptive=adaptive)
        # A bucket of one second's worth: a paused pool resumes at the configured rate
        # without a burst above it (aiolimiter binds to the loop that first uses it).
        self.limiter = AsyncLimiter(rate, 1.0) if rate > 0 else None


@functools.lru_cache(maxsize=64)
def _url(url: str) -> httpx.URL:
    """``url`` parsed once: every create POSTs to the same ``…/Users`` (httpx parses and
    validates a URL string on every request; an ``httpx.URL`` is immutable)."""
    return httpx.URL(url)


class ScimClient:
    """A SCIM service at ``base_url`` (e.g. ``https://api.zoom.us/scim2``).

    ``labels`` (profile "zoom"): requests per second of each Zoom rate-limit label
    (``{"light": 80, "medium": 60}``; 0: that label not paced), used instead of
    ``rate_limit``; ``ceiling`` (0: none) caps all labels together (Zoom's limits are
    shared by every app and job on the account); ``post_label`` is the label of a create. ``discovery=False``: the
    target has no ``/ServiceProviderConfig`` (Zoom), so nothing asks for it.
    """

    def __init__(
        self,
        base_url: str,
        token: SecretStr | TokenSource,
        http: httpx.AsyncClient,
        *,
        rate_limit: float = 0.0,
        adaptive: bool = True,
        policy: RetryPolicy | None = None,
        gate: PauseGate | None = None,
        clock: Clock = SYSTEM_CLOCK,
        bounds: Bounds | None = None,
        labels: Mapping[RateLabel, float] | None = None,
        post_label: RateLabel = "medium",
        discovery: bool = True,
        ceiling: float = 0.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        #: the most an answer may take: bytes (a list page, or one resource) and seconds
        self.bounds = bounds or Bounds()
        #: an OAuth source is asked before each request (it refreshes before expiry)
        self._auth = token if not isinstance(token, SecretStr) else None
        self._bearer = token.get_secret_value() if isinstance(token, SecretStr) else ""
        redact.register(self._bearer)  # whatever the target echoes back is masked
        #: the client's timeouts, as httpx's build_request would attach them
        self._extensions = {"timeout": http.timeout.as_dict()}
        self._headers = {
            "User-Agent": http.headers.get("User-Agent", USER_AGENT),
            "Authorization": f"Bearer {self._bearer}",
            "Accept": SCIM_MEDIA_TYPE,
            "Content-Type": SCIM_MEDIA_TYPE,
        }
        #: label → its pacer and limiter; one label ("all") unless ``labels`` are given
        self._labels: dict[str, _Label] = (
            {name: _Label(rate, adaptive) for name, rate in labels.items()}
            if labels
            else {"all": _Label(rate_limit, adaptive)}
        )
        self._post_label: RateLabel = post_label
        #: with ``labels``: every label's requests together stay under ``ceiling`` (0: none)
        self._ceiling = AsyncLimiter(ceiling, 1.0) if labels and ceiling > 0 else None
        self.discovery = discovery
        #: the pacer of the first label (the only one of an RFC target)
        self.pacer = next(iter(self._labels.values())).pacer
        self.policy = policy or RetryPolicy()
        self.clock = clock
        # kept bound (for the system clock: time.monotonic and anyio.sleep themselves)
        self._now = clock.now
        self._sleep = clock.sleep
        self.gate = gate or PauseGate(clock)
        self.stats = RequestStats()

    def __repr__(self) -> str:  # never show the token
        return f"ScimClient({self.base_url!r})"

    @property
    def pacers(self) -> dict[str, RatePacer]:
        """Each rate-limit label's pacer (the run report shows their rates)."""
        return {name: label.pacer for name, label in self._labels.items()}

    def _label(self, request: ScimRequest) -> tuple[str, _Label]:
        labels = self._labels
        if len(labels) == 1:
            return next(iter(labels.items()))
        name = zoom_label(request, self._post_label)
        found = labels.get(name)
        if found is None:  # a label without its own limit shares the first one's
            return next(iter(labels.items()))
        return name, found

    def _use(self, token: str) -> None:
        if token != self._bearer:
            redact.register(token)
            self._bearer = token
            self._headers = {**self._headers, "Authorization": f"Bearer {token}"}

    async def bulk_support(self) -> BulkSupport | None:
        """The Bulk limits to use, from ``/ServiceProviderConfig``, or None: single requests.

        Zoom has no ``/ServiceProviderConfig`` at all (404, facts.md §6.2): with
        ``discovery=False`` (profile "zoom") nothing is asked. Operations per request are
        capped at :data:`~bulkprov.scim.bulk.MAX_OPERATIONS`.
        """
        if not self.discovery:
            return None
        try:
            support = bulk_support(await self.send(service_provider_config()))
        except TargetStop:
            raise
        except TargetError:
            return None
        if not support.supported:
            return None
        return BulkSupport(
            True, min(support.max_operations, MAX_OPERATIONS), support.max_payload_size
        )

    async def _pace(self, pacer: RatePacer, limiter: AsyncLimiter | None = None) -> float | None:
        """Wait for ``pacer``'s next send slot; return the send time, or ``None`` when a
        ``Retry-After`` paused everyone meanwhile (the slot is void: wait at the gate again).

        The slot keeps the pacer's rate over time; :meth:`RatePacer.admit` then keeps this
        send at least about ``1/rate`` after the previous one, so that workers whose timers
        fire together (uvloop's fire on 1 ms ticks; a busy loop wakes several at once) do not
        reach a strict limiter back to back.
        """
        clock_now = self._now
        now = clock_now()
        delay = pacer.reserve(now)
        if delay > 0:
            await self._sleep(delay)
            now = clock_now()
            if self.gate.paused:
                return None
        # the label's hard cap, then the cap of every label together (profile "zoom")
        if limiter is not None:
            await limiter.acquire()
            now = clock_now()
        if self._ceiling is not None:
            await self._ceiling.acquire()
            now = clock_now()
        wait = pacer.admit(now)
        while wait > 0:
            await self._sleep(wait)
            now = clock_now()
            wait = pacer.admit(now)
        return now

    async def send(self, request: ScimRequest) -> Any:
        """Send ``request`` and return the parsed JSON answer (``None`` for no body)."""
        clock_now = self._now
        started = clock_now()
        attempt = 0  # failed attempts that count toward max_attempts
        throttles = 0
        url = self.base_url + request.path
        refreshed = False
        label_name, label = self._label(request)
        pacer, limiter = label.pacer, label.limiter
        while True:
            await self.gate.wait()
            if self._auth is not None:
                self._use(await self._auth.token())
            sent = await self._pace(pacer, limiter)
            if sent is None:
                continue  # a Retry-After came while this request waited for its slot
            stats = self.stats
            stats.requests += 1
            stats.by_method[request.method] = stats.by_method.get(request.method, 0) + 1
            stats.by_label[label_name] = stats.by_label.get(label_name, 0) + 1
            retry_after: float | None = None
            try:
                # a Request built here and sent as it is (httpx's client.send): the client's
                # defaults need no merging per request (benchmarks/RESULTS.md, "Issue 14")
                bounds = self.bounds
                status, headers, content = await fetch(
                    self._http,
                    httpx.Request(
                        request.method,
                        _url(url),
                        params=request.params or None,
                        content=request.body,
                        headers=self._headers,
                        extensions=self._extensions,
                    ),
                    # a list or a Bulk answer is a page; anything else one resource
                    limit=bounds.page_bytes
                    if request.params or request.path == "/Bulk"
                    else bounds.resource_bytes,
                    deadline=bounds.deadline,
                )
                if status != 429:
                    pacer.on_success()
                return classify(status, headers, content)
            except TargetDailyLimit:
                stats.throttled += 1
                raise  # no retry can help before the reset: the run stops, resumable
            except AnswerTooLarge as exc:
                text = f"{request.method} {request.path}: {exc}"
                if request.creates:  # it may have been created: look before re-sending
                    raise OutcomeUnknown(text) from exc
                raise TargetRejected(text) from exc
            except TargetAuthError as exc:
                if self._auth is not None and self._auth.refreshable and not refreshed:
                    refreshed = True  # revoked or expired early: one new token, one retry
                    self._use(await self._auth.token(force=True))
                    continue
                raise TargetAuthError(
                    f"the SCIM target refused our token ({exc}). The token is wrong, expired "
                    "or revoked, or lacks a scope (Zoom: scim2): generate a new one and run "
                    "again; the run is saved and resumes where it stopped",
                    status=exc.status,
                ) from exc
            except TargetThrottled as exc:
                stats.throttled += 1
                error: TargetError = exc
                retry_after = exc.retry_after
                pacer.on_throttle(sent, clock_now(), retry_after)
                if retry_after is not None:
                    self.gate.pause(retry_after)
            except TargetUnavailable as exc:
                error = exc
            except httpx.TransportError as exc:  # timeouts included
                failure = describe(exc, url)
                if failure.cause == "certificate":
                    raise TargetTLSError(
                        f"{failure.text}; give its CA in target.ca_file — TLS verification "
                        "is never turned off"
                    ) from exc
                if failure.cause == "tls":
                    raise TargetTLSError(failure.text) from exc
                if not failure.retryable:  # the proxy refused: no retry can help
                    raise TargetProxyError(failure.text) from exc
                error = TargetUnavailable(f"{request.method} {request.path}: {failure.text}")
                error.__cause__ = exc
            if request.creates and not isinstance(error, TargetThrottled):
                # The service may have created it: let the caller look before re-sending.
                raise OutcomeUnknown(error.detail, status=error.status) from error
            if isinstance(error, TargetThrottled):
                throttles += 1
                if retry_after is None and pacer.adaptive:
                    wait = 0.0  # the pacer has slowed down: its next slot is the backoff
                else:
                    wait = self.policy.backoff(min(throttles, 16), retry_after)
                give_up = self.policy.gives_up(0, started, wait, self.clock)
            else:
                attempt += 1
                wait = self.policy.backoff(attempt, retry_after)
                give_up = self.policy.gives_up(attempt, started, wait, self.clock)
            if give_up:
                error.add_note(f"gave up after {attempt + throttles + 1} attempt(s)")
                raise error
            stats.retries += 1
            if retry_after is None and wait > 0:
                await self._sleep(wait)
