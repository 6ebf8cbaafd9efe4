"""Corporate proxies: every request (msal's token, Graph, Zoom OAuth, SCIM) through a CONNECT
proxy on loopback, to TLS services whose names only the proxy can resolve.

The services are the simulators over TLS (a trustme CA) on 127.0.0.1, configured by names
(``login.test``, ``graph.test``, ``scim.test``) that only :class:`tests.proxy.ConnectProxy`
resolves: a request that skipped the proxy could not even find its host.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bulkprov import credentials
from bulkprov.config import parse_config
from bulkprov.credentials import Secrets
from bulkprov.errors import ConfigError, SourceError, TargetProxyError
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import GraphTenant, ScimService
from bulkprov.sim.server import serve_simulators
from bulkprov.transport import Proxies, bypass, describe, make_client

from .conftest import FAST_RETRY, GRAPH_SECRET, SCIM_TOKEN
from .e2e import expected_values, store_problems
from .proxy import ConnectProxy, serve_proxy

trustme = pytest.importorskip("trustme")

NAMES = ("login.test", "graph.test", "scim.test")
ZOOM_SECRET = "zoom-s2s-secret-Qk4-never-printed"
PROXY_PASSWORD = "proxy-pass-Wm2-never-printed"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def named_ca(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    authority = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(*NAMES).configure_cert(ctx)
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return ctx, path


class World:
    """The simulators over TLS behind names, and a config that uses the names."""

    def __init__(self, tenant: GraphTenant, scim: ScimService, graph_port: int, scim_port: int):
        self.tenant, self.scim = tenant, scim
        self.graph_port, self.scim_port = graph_port, scim_port

    def config(self, tmp_path: Path, ca_file: Path, name: str = "s.db", **network: Any) -> Any:
        data: dict[str, Any] = {
            "graph": {
                "tenant_id": self.tenant.tenant_id,
                "client_id": self.tenant.client_id,
                "authority": f"https://login.test:{self.graph_port}",
                "base_url": f"https://graph.test:{self.graph_port}/v1.0",
                "ca_file": str(ca_file),
                "client_secret": {"env": "T_GRAPH_SECRET"},
            },
            "target": {
                "base_url": f"https://scim.test:{self.scim_port}/scim2",
                "ca_file": str(ca_file),
                "concurrency": 4,
                "rate_limit": 0,
                "oauth": {
                    "account_id": "acct-1",
                    "client_id": "zoom-client",
                    "client_secret": {"env": "T_ZOOM_SECRET"},
                    "token_url": f"https://scim.test:{self.scim_port}/oauth/token",
                },
            },
            "state": {"path": str(tmp_path / name), "commit_seconds": 0.05},
            "network": network,
            "mappings": [m.model_dump(exclude_none=True) for m in _mappings()],
        }
        return parse_config(data, path=str(tmp_path / "bulkprov.toml"))


def _mappings() -> Any:
    from bulkprov.mapping.defaults import DEFAULT_ZOOM_MAPPINGS

    return DEFAULT_ZOOM_MAPPINGS


@pytest.fixture
async def world(
    named_ca: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    ctx, _ = named_ca
    monkeypatch.setenv("T_GRAPH_SECRET", GRAPH_SECRET)
    monkeypatch.setenv("T_ZOOM_SECRET", ZOOM_SECRET)
    tenant = GraphTenant(user_count=40, seed=4, client_secret=GRAPH_SECRET)
    scim = ScimService(SCIM_TOKEN)
    scim.enable_oauth("acct-1", "zoom-client", ZOOM_SECRET)
    async with serve_simulators(tenant, scim, graph_ssl=ctx, scim_ssl=ctx) as s:
        assert s.graph_url and s.scim_url
        yield World(tenant, scim, httpx.URL(s.graph_url).port or 0, httpx.URL(s.scim_url).port or 0)


def _hosts() -> dict[str, str]:
    return dict.fromkeys(NAMES, "127.0.0.1")


def _first(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _secrets(cfg: Any) -> Secrets:
    return Secrets.from_config(cfg)


# --- end to end -------------------------------------------------------------------------


async def test_every_request_goes_through_the_environment_proxy(
    world: World, named_ca: tuple[ssl.SSLContext, Path], tmp_path: Path, monkeypatch
) -> None:
    _, ca_file = named_ca
    async with serve_proxy(ConnectProxy(_hosts())) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        cfg = world.config(tmp_path, ca_file)
        result = await run_sync(cfg, _secrets(cfg), policy=FAST_RETRY)
    assert result.status == "completed"
    expected = expected_values(cfg, world.tenant.iter_users())
    assert store_problems(expected, world.scim.dump()) == []
    # msal (openid configuration + token), Graph pages, Zoom OAuth and SCIM: each host was
    # reached through a tunnel, and nothing else could have reached them
    hosts = {t.rpartition(":")[0] for t in proxy.tunnels}
    assert hosts == {"login.test", "graph.test", "scim.test"}
    assert world.scim.oauth_requests >= 1
    assert proxy.rejected == [] and proxy.other == []


async def test_config_proxy_with_credentials_from_a_secret_source(
    world: World, named_ca: tuple[ssl.SSLContext, Path], tmp_path: Path, monkeypatch
) -> None:
    _, ca_file = named_ca
    monkeypatch.setenv("T_PROXY_PASSWORD", PROXY_PASSWORD)
    async with serve_proxy(ConnectProxy(_hosts(), credentials=("svc", PROXY_PASSWORD))) as proxy:
        # the environment names another proxy: [network] proxy replaces it
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
        cfg = world.config(
            tmp_path,
            ca_file,
            proxy=proxy.url,
            proxy_username="svc",
            proxy_password={"env": "T_PROXY_PASSWORD"},
        )
        result = await run_sync(cfg, _secrets(cfg), policy=FAST_RETRY)
    assert result.status == "completed"
    assert {t.rpartition(":")[0] for t in proxy.tunnels} == set(NAMES)
    assert proxy.rejected == []


async def test_credentials_in_the_environment_proxy_url(
    world: World, named_ca: tuple[ssl.SSLContext, Path], tmp_path: Path, monkeypatch
) -> None:
    _, ca_file = named_ca
    async with serve_proxy(ConnectProxy(_hosts(), credentials=("svc", PROXY_PASSWORD))) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("://", f"://svc:{PROXY_PASSWORD}@"))
        cfg = world.config(tmp_path, ca_file)
        result = await run_sync(cfg, _secrets(cfg), policy=FAST_RETRY)
    assert result.status == "completed"
    assert proxy.rejected == []


async def test_missing_proxy_credentials_give_one_clear_error(
    world: World, named_ca: tuple[ssl.SSLContext, Path], tmp_path: Path, monkeypatch, caplog
) -> None:
    _, ca_file = named_ca
    async with serve_proxy(ConnectProxy(_hosts(), credentials=("svc", PROXY_PASSWORD))) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        cfg = world.config(tmp_path, ca_file)
        with pytest.raises(BaseException) as info:
            await run_sync(cfg, _secrets(cfg), policy=FAST_RETRY)
    err = _first(info.value)
    # msal's token request is the first to need the proxy
    assert isinstance(err, SourceError), repr(err)
    text = str(err)
    assert proxy.url in text and "407" in text and "credentials" in text
    assert "login.test" in text
    assert len(proxy.rejected) <= 2  # no retry storm against a proxy that wants credentials
    assert isinstance(err.__cause__, httpx.ProxyError)


async def test_a_refusing_proxy_stops_the_target_at_once(
    world: World, named_ca: tuple[ssl.SSLContext, Path], tmp_path: Path, monkeypatch
) -> None:
    """The target's proxy refuses (policy): TargetProxyError naming the proxy, no retries."""
    _, ca_file = named_ca
    async with (
        serve_proxy(ConnectProxy(_hosts())) as good,
        serve_proxy(ConnectProxy(_hosts(), refuse=True)) as bad,
    ):
        monkeypatch.setenv("HTTPS_PROXY", good.url)
        cfg = world.config(tmp_path, ca_file)
        # Graph goes through the good proxy; the target's URL goes through the refusing one
        proxies = Proxies(https=good.url)
        routed = _PerHost(proxies, {"scim.test": bad.url})
        monkeypatch.setattr(credentials, "proxies", lambda cfg, secrets=None: routed)
        with pytest.raises(BaseException) as info:
            await run_sync(cfg, _secrets(cfg), policy=FAST_RETRY)
    err = _first(info.value)
    assert isinstance(err, TargetProxyError), repr(err)
    assert bad.url in str(err) and "403" in str(err) and "scim.test" in str(err)
    assert len(bad.rejected) <= 2
    assert world.scim.dump() == []


class _PerHost(Proxies):
    """Proxies whose answer depends on the host (two proxies in one test)."""

    def __init__(self, default: Proxies, by_host: dict[str, str]) -> None:
        object.__setattr__(self, "https", default.https)
        object.__setattr__(self, "http", default.http)
        object.__setattr__(self, "no_proxy", ())
        object.__setattr__(self, "auth", None)
        object.__setattr__(self, "_by_host", by_host)

    def for_url(self, url: str | httpx.URL) -> str | None:
        u = url if isinstance(url, httpx.URL) else httpx.URL(url)
        return self._by_host.get(u.host) or super().for_url(u)  # type: ignore[attr-defined]

    def urls(self) -> set[str]:
        return super().urls() | set(self._by_host.values())  # type: ignore[attr-defined]


async def test_an_unreachable_proxy_is_named(tmp_path: Path) -> None:
    closed = _closed_port()
    proxies = Proxies(https=f"http://127.0.0.1:{closed}")
    async with make_client(timeout=5, max_connections=1, proxies=proxies) as http:
        with pytest.raises(httpx.TransportError) as info:
            await http.get("https://scim.test:443/scim2/Users")
    failure = describe(info.value)
    assert failure.cause == "proxy"
    assert f"http://127.0.0.1:{closed}" in failure.text and "scim.test:443" in failure.text
    assert "refused" in failure.text


async def test_without_a_proxy_an_unresolvable_host_says_dns(monkeypatch) -> None:
    import socket

    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "scim.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    async with make_client(timeout=5, max_connections=1, proxies=Proxies()) as http:
        with pytest.raises(httpx.TransportError) as info:
            await http.get("https://scim.test:8443/scim2/Users")
    failure = describe(info.value)
    assert failure.cause == "dns"
    assert "scim.test" in failure.text and "HTTPS_PROXY" in failure.text


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the rules ----------------------------------------------------------------------------


def test_proxies_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("no_proxy", "corp.example, .internal,10.0.0.0/8,api.zoom.us:8443")
    p = Proxies.from_environment()
    assert p.https == "http://proxy.corp:3128" and p.http is None
    assert p.for_url("https://graph.microsoft.com/v1.0/users") == "http://proxy.corp:3128"
    assert p.for_url("https://api.zoom.us/scim2") == "http://proxy.corp:3128"  # port 443
    assert p.for_url("https://api.zoom.us:8443/scim2") is None
    assert p.for_url("https://a.corp.example/x") is None
    assert p.for_url("https://corp.example/x") is None
    assert p.for_url("https://notcorp.example/x") == "http://proxy.corp:3128"
    assert p.for_url("https://x.internal/") is None
    assert p.for_url("https://10.1.2.3/") is None
    assert p.for_url("https://11.1.2.3/") == "http://proxy.corp:3128"
    assert p.for_url("http://plain.example/") is None  # no HTTP_PROXY
    # loopback never goes through a proxy: the simulators, a local SCIM server
    assert p.for_url("https://127.0.0.1:8443/") is None
    assert p.for_url("https://localhost/") is None
    monkeypatch.setenv("ALL_PROXY", "http://all.corp:8080")
    assert Proxies.from_environment().for_url("http://plain.example/") == "http://all.corp:8080"


@pytest.mark.parametrize(
    ("entries", "host", "port", "goes_direct"),
    [
        (("*",), "anything.example", 443, True),
        (("Example.COM",), "www.example.com", 443, True),
        (("example.com",), "badexample.com", 443, False),
        ((".example.com",), "example.com", 443, True),
        (("example.com:8443",), "example.com", 443, False),
        (("example.com:8443",), "example.com", 8443, True),
        (("192.168.0.0/16",), "192.168.4.5", 443, True),
        (("192.168.1.1",), "192.168.1.2", 443, False),
        (("::1",), "::1", 443, True),
        (("[2001:db8::1]:443",), "2001:db8::1", 443, True),
        (("2001:db8::/32",), "2001:db8::7", 443, True),
    ],
)
def test_no_proxy_rules(entries: tuple[str, ...], host: str, port: int, goes_direct: bool) -> None:
    assert bypass(entries, host, port) is goes_direct


def test_config_overrides_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env.proxy:3128")
    monkeypatch.setenv("NO_PROXY", "corp.example")
    monkeypatch.setenv("T_PP", PROXY_PASSWORD)
    base = {
        "graph": {"tenant_id": "t", "client_id": "c"},
        "target": {"base_url": "https://api.zoom.us/scim2"},
        "mappings": [m.model_dump(exclude_none=True) for m in _mappings()],
    }
    cfg = parse_config(base)
    assert credentials.proxies(cfg).https == "http://env.proxy:3128"
    cfg = parse_config({**base, "network": {"proxy": "http://cfg.proxy:8080"}})
    got = credentials.proxies(cfg)
    assert (got.https, got.http, got.no_proxy) == (
        "http://cfg.proxy:8080",
        "http://cfg.proxy:8080",
        ("corp.example",),
    )
    cfg = parse_config({**base, "network": {"proxy": "none"}})
    assert not credentials.proxies(cfg)
    cfg = parse_config({**base, "network": {"no_proxy": ["*"]}})
    assert credentials.proxies(cfg).for_url("https://api.zoom.us/scim2") is None
    cfg = parse_config(
        {
            **base,
            "network": {
                "proxy": "http://cfg.proxy:8080",
                "proxy_username": "svc",
                "proxy_password": {"env": "T_PP"},
            },
        }
    )
    got = credentials.proxies(cfg)
    assert got.auth == ("svc", PROXY_PASSWORD)
    assert PROXY_PASSWORD not in repr(got) and PROXY_PASSWORD not in got.describe()


@pytest.mark.parametrize(
    ("network", "says"),
    [
        ({"proxy": "proxy.corp:3128"}, "http:// or https:// URL"),
        ({"proxy": f"http://svc:{PROXY_PASSWORD}@proxy.corp:3128"}, "keep the proxy password"),
        ({"proxy": "http://p:1", "proxy_username": "svc"}, "together"),
    ],
)
def test_bad_network_config_is_a_config_error(network: dict[str, Any], says: str) -> None:
    base = {
        "graph": {"tenant_id": "t", "client_id": "c"},
        "target": {"base_url": "https://api.zoom.us/scim2"},
        "mappings": [m.model_dump(exclude_none=True) for m in _mappings()],
        "network": network,
    }
    with pytest.raises(ConfigError) as info:
        parse_config(base, path="bulkprov.toml")
    assert says in str(info.value) and "network" in str(info.value)
    assert PROXY_PASSWORD not in str(info.value)


async def test_the_proxy_password_never_reaches_an_error(monkeypatch) -> None:
    async with serve_proxy(ConnectProxy(_hosts(), refuse=True)) as proxy:
        proxies = Proxies(https=proxy.url, auth=("svc", PROXY_PASSWORD))
        async with make_client(timeout=5, max_connections=1, proxies=proxies) as http:
            with pytest.raises(httpx.TransportError) as info:
                await http.get("https://scim.test:443/x")
        failure = describe(info.value)
    assert failure.cause == "proxy-refused" and not failure.retryable
    assert PROXY_PASSWORD not in failure.text and PROXY_PASSWORD not in str(info.value)
    assert proxy.url in failure.text


def test_secret_holder_keeps_the_old_positional_shape() -> None:
    s = Secrets(SecretStr("a"), SecretStr("b"))
    assert s.proxy_password is None


async def test_test_connection_names_the_proxy(
    world: World, named_ca: tuple[ssl.SSLContext, Path], tmp_path: Path, monkeypatch
) -> None:
    from bulkprov.pipeline import check_connection

    _, ca_file = named_ca
    async with serve_proxy(ConnectProxy(_hosts())) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        cfg = world.config(tmp_path, ca_file)
        steps = await check_connection(cfg, _secrets(cfg))
    assert all(s.ok for s in steps), steps
    assert f"through the proxy {proxy.url}" in steps[0].detail
    assert f"through the proxy {proxy.url}" in steps[-1].detail
    async with (
        serve_proxy(ConnectProxy(_hosts())) as good,
        serve_proxy(ConnectProxy(_hosts(), refuse=True)) as bad,
    ):
        routed = _PerHost(Proxies(https=good.url), {"scim.test": bad.url})
        monkeypatch.setattr(credentials, "proxies", lambda cfg, secrets=None: routed)
        cfg = world.config(tmp_path, ca_file, "t.db")
        steps = await check_connection(cfg, _secrets(cfg))
    assert steps[0].ok and not steps[-1].ok
    assert bad.url in steps[-1].detail and "403" in steps[-1].detail
    assert "token was refused" not in steps[-1].detail
