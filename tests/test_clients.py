"""GraphClient and ScimClient against respx routes: retries, Retry-After, auth, give-up.

The clients run on a :class:`~tests.clock.FakeClock`: pauses, backoff and pacing are asserted
on its simulated time, and no test sleeps for real.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import anyio
import httpx
import pytest
import respx
from pydantic import SecretStr

from bulkprov.errors import (
    SourceAuthError,
    SourceError,
    TargetAuthError,
    TargetRejected,
    TargetUnavailable,
)
from bulkprov.graph.client import GraphClient
from bulkprov.retry import RetryPolicy
from bulkprov.scim import requests as rq
from bulkprov.scim.client import OutcomeUnknown, ScimClient
from bulkprov.sim import GraphTenant, SimTransport

from .clock import FakeClock
from .conftest import GRAPH_SECRET

FAST = RetryPolicy(max_attempts=4, max_seconds=5, base=0.001, cap=0.002)
TOKEN_URL = "https://login.test/t1/oauth2/v2.0/token"
GRAPH = "https://graph.test/v1.0"
SCIM = "https://scim.test/scim2"


def token_ok(expires_in: int = 3599) -> httpx.Response:
    return httpx.Response(200, json={"access_token": "tok", "expires_in": expires_in})


def graph_client(router: respx.MockRouter, clock: FakeClock | None = None) -> GraphClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(router.handler))
    return GraphClient(
        authority="https://login.test",
        tenant_id="t1",
        client_id="c1",
        client_secret=SecretStr("s3cret"),
        base_url=GRAPH,
        http=http,
        policy=FAST,
        clock=clock or FakeClock(),
    )


def scim_client(router: respx.MockRouter, clock: FakeClock | None = None, **kw) -> ScimClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(router.handler))
    return ScimClient(SCIM, SecretStr("tok"), http, policy=FAST, clock=clock or FakeClock(), **kw)


def timed(
    clock: FakeClock, *answers: httpx.Response
) -> tuple[Callable[[httpx.Request], httpx.Response], list[float]]:
    """A respx side effect giving ``answers`` in turn (the last one again and again), and
    the clock's time at each request it answered."""
    sent: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(clock.now())
        return answers[min(len(sent), len(answers)) - 1]

    return answer, sent


async def test_graph_follows_next_links_until_the_last_page():
    router = respx.MockRouter(using=None)
    router.post(TOKEN_URL).mock(return_value=token_ok())
    router.get(f"{GRAPH}/users", params={"$skiptoken": "p2"}).mock(
        return_value=httpx.Response(200, json={"value": [{"id": "3"}]})
    )
    router.get(f"{GRAPH}/users").mock(
        return_value=httpx.Response(
            200,
            json={
                "value": [{"id": "1"}, {"id": "2"}],
                "@odata.nextLink": f"{GRAPH}/users?$skiptoken=p2",
            },
        )
    )
    g = graph_client(router)
    pages = [p async for p in g.pages(g.users_url(["id", "mail"], 2))]
    assert [[u["id"] for u in p.users] for p in pages] == [["1", "2"], ["3"]]
    assert pages[0].next_link == f"{GRAPH}/users?$skiptoken=p2" and pages[1].next_link is None
    assert [p.number for p in pages] == [0, 1]
    assert "$select=id,mail" in pages[0].link and "$top=2" in pages[0].link


async def test_graph_honours_fractional_retry_after_then_succeeds():
    router = respx.MockRouter(using=None)
    router.post(TOKEN_URL).mock(return_value=token_ok())
    clock = FakeClock()
    answer, sent = timed(
        clock,
        httpx.Response(
            429, headers={"Retry-After": "0.2"}, json={"error": {"code": "TooManyRequests"}}
        ),
        httpx.Response(200, json={"value": []}),
    )
    route = router.get(f"{GRAPH}/users").mock(side_effect=answer)
    g = graph_client(router, clock)
    pages = [p async for p in g.pages(f"{GRAPH}/users")]
    assert sent == [0.0, pytest.approx(0.2)]  # asked again when the Retry-After had passed
    assert route.call_count == 2 and pages[0].users == [] and g.throttled == 1


async def test_graph_refreshes_the_token_once_on_401():
    router = respx.MockRouter(using=None)
    tokens = router.post(TOKEN_URL).mock(return_value=token_ok())
    router.get(f"{GRAPH}/users").mock(
        side_effect=[
            httpx.Response(401, json={"error": {"code": "InvalidAuthenticationToken"}}),
            httpx.Response(200, json={"value": [{"id": "1"}]}),
        ]
    )
    g = graph_client(router)
    assert (await g.get_json(f"{GRAPH}/users"))["value"] == [{"id": "1"}]
    assert tokens.call_count == 2


async def test_graph_403_is_a_permission_error_without_the_secret():
    router = respx.MockRouter(using=None)
    router.post(TOKEN_URL).mock(return_value=token_ok())
    router.get(f"{GRAPH}/users").mock(
        return_value=httpx.Response(
            403,
            json={
                "error": {
                    "code": "Authorization_RequestDenied",
                    "message": "Insufficient privileges",
                }
            },
        )
    )
    with pytest.raises(SourceAuthError, match="User.Read.All") as info:
        await graph_client(router).get_json(f"{GRAPH}/users")
    assert "s3cret" not in str(info.value)


async def test_graph_bad_secret_names_the_cause_not_the_secret():
    router = respx.MockRouter(using=None)
    router.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            401,
            json={
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
            },
        )
    )
    with pytest.raises(SourceAuthError, match="invalid_client") as info:
        await graph_client(router).token()
    assert "s3cret" not in str(info.value)


async def test_graph_gives_up_after_the_attempt_cap():
    router = respx.MockRouter(using=None)
    router.post(TOKEN_URL).mock(return_value=token_ok())
    route = router.get(f"{GRAPH}/users").mock(return_value=httpx.Response(503))
    with pytest.raises(SourceError, match="after 4 attempt"):
        await graph_client(router).get_json(f"{GRAPH}/users")
    assert route.call_count == 4


async def test_scim_sends_bearer_and_scim_media_type():
    router = respx.MockRouter(using=None)
    route = router.get(f"{SCIM}/Users").mock(
        return_value=httpx.Response(200, json={"totalResults": 0, "Resources": []})
    )
    await scim_client(router).send(rq.find_users("userName", "a@x.com"))
    req = route.calls[0].request
    assert req.headers["authorization"] == "Bearer tok"
    assert req.headers["accept"] == "application/scim+json"
    assert req.url.params["filter"] == 'userName eq "a@x.com"'


async def test_scim_retries_5xx_on_patch_then_succeeds():
    router = respx.MockRouter(using=None)
    route = router.patch(f"{SCIM}/Users/u1").mock(
        side_effect=[
            httpx.Response(503),
            httpx.ConnectError("reset"),
            httpx.Response(200, json={"id": "u1"}),
        ]
    )
    c = scim_client(router)
    assert await c.send(rq.set_active("u1", False)) == {"id": "u1"}
    assert route.call_count == 3 and c.stats.retries == 2


async def test_scim_post_with_unknown_outcome_is_not_resent():
    """A 502 on POST may hide a created user: the client hands it back for matching."""
    router = respx.MockRouter(using=None)
    route = router.post(f"{SCIM}/Users").mock(return_value=httpx.Response(502))
    with pytest.raises(OutcomeUnknown):
        await scim_client(router).send(rq.create_user(b'{"userName":"a"}'))
    assert route.call_count == 1


async def test_scim_post_429_is_retried_because_nothing_was_created():
    router = respx.MockRouter(using=None)
    route = router.post(f"{SCIM}/Users").mock(
        side_effect=[httpx.Response(429), httpx.Response(201, json={"id": "n1"})]
    )
    c = scim_client(router)
    assert await c.send(rq.create_user(b"{}")) == {"id": "n1"}
    assert route.call_count == 2 and c.stats.throttled == 1


async def test_scim_retry_after_pauses_every_caller():
    router = respx.MockRouter(using=None)
    clock = FakeClock()
    answer_a, sent_a = timed(
        clock, httpx.Response(429, headers={"Retry-After": "0.3"}), httpx.Response(200, json={})
    )
    answer_b, sent_b = timed(clock, httpx.Response(200, json={}))
    router.get(f"{SCIM}/Users/a").mock(side_effect=answer_a)
    router.get(f"{SCIM}/Users/b").mock(side_effect=answer_b)
    c = scim_client(router, clock)

    async def one(key: str, delay: float) -> None:
        await clock.sleep(delay)
        await c.send(rq.get_user(key))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a", 0.0)
        tg.start_soon(one, "b", 0.05)  # another worker, while a's Retry-After runs
    assert c.gate.pauses == 1
    assert sent_a == [0.0, pytest.approx(0.3)]  # a asked again when its Retry-After passed
    # b came at 0.05, during a's pause, and waited at the gate for the rest of it...
    assert (0.05, pytest.approx(0.25)) in clock.sleeps
    # ...so it was not sent before the pause ended (later still: the 429 also slowed the
    # pacer, whose next slot after a's is 1/0.85 s on)
    assert len(sent_b) == 1 and sent_b[0] >= 0.3


async def test_scim_401_explains_what_to_do_and_hides_the_token():
    router = respx.MockRouter(using=None)
    router.get(f"{SCIM}/Users/x").mock(
        return_value=httpx.Response(401, json={"detail": "Invalid access token."})
    )
    with pytest.raises(TargetAuthError) as info:
        await scim_client(router).send(rq.get_user("x"))
    text = str(info.value)
    assert "refused our token" in text and "Invalid access token" in text and 'tok"' not in text


async def test_scim_4xx_is_not_retried():
    router = respx.MockRouter(using=None)
    route = router.patch(f"{SCIM}/Users/u1").mock(
        return_value=httpx.Response(
            400, json={"detail": "Attribute 'foo' is not supported", "scimType": "invalidPath"}
        )
    )
    with pytest.raises(TargetRejected, match="not supported"):
        await scim_client(router).send(rq.set_active("u1", True))
    assert route.call_count == 1


async def test_scim_gives_up_on_persistent_5xx():
    router = respx.MockRouter(using=None)
    route = router.get(f"{SCIM}/Users/u1").mock(return_value=httpx.Response(500))
    with pytest.raises(TargetUnavailable) as info:
        await scim_client(router).send(rq.get_user("u1"))
    assert route.call_count == 4
    assert any("gave up" in n for n in info.value.__notes__)


async def test_rate_limit_spaces_requests():
    router = respx.MockRouter(using=None)
    clock = FakeClock()
    answer, sent = timed(clock, httpx.Response(200, json={}))
    router.get(f"{SCIM}/Users/u1").mock(side_effect=answer)
    c = scim_client(router, clock, rate_limit=20)
    # 20 requests: aiolimiter's bucket (the hard ceiling, on the event loop's real time) holds
    # one second's worth and never waits for them; the pacer spaces them on the fake clock
    for _ in range(20):
        await c.send(rq.get_user("u1"))
    assert [b - a for a, b in itertools.pairwise(sent)] == pytest.approx([1 / 20] * 19)
    assert clock.now() == pytest.approx(19 / 20)


async def test_graph_user_count_reads_the_simulator_and_failures_give_none():
    tenant = GraphTenant(user_count=37, seed=3, client_secret=GRAPH_SECRET)
    http = httpx.AsyncClient(transport=SimTransport(tenant.handle))
    g = GraphClient(
        authority="http://sim",
        tenant_id=tenant.tenant_id,
        client_id=tenant.client_id,
        client_secret=SecretStr(GRAPH_SECRET),
        base_url="http://sim/v1.0",
        http=http,
        policy=FAST,
    )
    assert await g.user_count() == 37

    # a 400, a 429, a body that is not a number, a dead connection: None, no exception
    router = respx.MockRouter(using=None)
    router.post(TOKEN_URL).mock(return_value=token_ok())
    route = router.get(f"{GRAPH}/users/$count")
    failing = graph_client(router)
    for answer in (
        httpx.Response(400, json={"error": {"code": "Request_BadRequest", "message": "no"}}),
        httpx.Response(429, headers={"Retry-After": "0.01"}),
        httpx.Response(200, text="many"),
        httpx.ConnectError("refused"),
    ):
        if isinstance(answer, httpx.Response):
            route.mock(return_value=answer)
        else:
            route.mock(side_effect=answer)
        assert await failing.user_count() is None
    assert route.calls[0].request.headers["ConsistencyLevel"] == "eventual"
    assert failing.throttled == 1


async def test_every_command_paces_and_retries_the_target_as_configured(servers, tmp_path):
    """sync, plan, approve, provision and test-connection open the target through one
    open_clients: the configured rate limit, adaptive flag and retry budget hold for each
    (approve sent held disables unpaced with 3 attempts before the redesign)."""
    from bulkprov.pipeline import open_clients
    from bulkprov.pipeline.clients import QUICK

    from .conftest import SECRETS, make_config

    cfg = make_config(
        servers,
        tmp_path / "state.db",
        target__rate_limit=25,
        target__adaptive=False,
        target__max_attempts=5,
        target__max_retry_seconds=77,
    )
    async with open_clients(cfg, SECRETS) as (_, scim):  # plan, approve
        assert (scim.pacer.ceiling, scim.pacer.adaptive) == (25, False)
        assert (scim.policy.max_attempts, scim.policy.max_seconds) == (5, 77)
    async with open_clients(cfg, SECRETS, scim_policy=QUICK) as (_, scim):  # on demand
        assert (scim.pacer.ceiling, scim.pacer.adaptive) == (25, False)
        assert scim.policy is QUICK
