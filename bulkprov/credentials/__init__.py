"""How every command authenticates and verifies TLS: one place, so no command can forget.

``sync``, ``plan``, ``provision``, ``test-connection`` and ``mapping`` all build their HTTP
clients and credentials here: the custom CA bundles (``graph.ca_file``, ``target.ca_file``;
verification is never turned off), msal for an https Graph authority
(:mod:`bulkprov.credentials.graph`) and Zoom server-to-server OAuth for the target
(:mod:`bulkprov.credentials.target`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from pydantic import SecretStr

from bulkprov.credentials.graph import MsalToken
from bulkprov.credentials.target import TokenSource, ZoomOAuth
from bulkprov.errors import ConfigError
from bulkprov.transport import Bounds, Proxies

if TYPE_CHECKING:
    from bulkprov.config import Config


@dataclass(slots=True)
class Secrets:
    #: the Graph client secret, or with ``graph.certificate`` its PEM private key
    graph_client_secret: SecretStr
    #: the static SCIM token, or with ``target.oauth`` the OAuth client secret
    scim_token: SecretStr
    #: ``[network] proxy_password``, when the config names one
    proxy_password: SecretStr | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> Secrets:
        path = cfg.source_path
        oauth = cfg.target.oauth
        cert = cfg.graph.certificate
        return cls(
            cert.private_key.read("graph.certificate.private_key", path)
            if cert
            else cfg.graph.client_secret.read("graph.client_secret", path),
            oauth.client_secret.read("target.oauth.client_secret", path)
            if oauth
            else cfg.target.token.read("target.token", path),
            net.proxy_password.read("network.proxy_password", path)
            if (net := cfg.network).proxy_password
            else None,
        )


def proxies(cfg: Config, secrets: Secrets | None = None) -> Proxies:
    """The proxies every client of a command uses: ``[network]``, else the environment's.

    ``proxy``/``no_proxy`` in the config each replace their environment variables; proxy
    credentials come in an environment proxy URL, or as ``proxy_username`` with
    ``proxy_password`` (a secret source, read into ``secrets``).
    """
    net = cfg.network
    env = Proxies.from_environment()
    if net.proxy == "none":
        https = http = None
    elif net.proxy is not None:
        https = http = net.proxy
    else:
        https, http = env.https, env.http
    no_proxy = tuple(p.strip() for p in net.no_proxy) if net.no_proxy is not None else env.no_proxy
    auth = None
    if net.proxy_username is not None:
        password = secrets.proxy_password if secrets is not None else None
        if password is None:
            assert net.proxy_password is not None  # the config checks they come together
            password = net.proxy_password.read("network.proxy_password", cfg.source_path)
        auth = (net.proxy_username, password.get_secret_value())
    return Proxies(https=https, http=http, no_proxy=no_proxy, auth=auth)


def verify(path: Path | None) -> str | bool:
    """``make_client``'s ``verify``: a custom CA bundle, or the system's (never off)."""
    if path is None:
        return True
    if not path.is_file():
        raise ConfigError(f"CA file {path} does not exist", key="ca_file")
    return str(path)


def bounds(cfg: Config) -> Bounds:
    """``[network]``'s bounds on one answer: bytes of a page or a resource, and seconds."""
    net = cfg.network
    return Bounds(
        page_bytes=net.max_page_bytes, resource_bytes=net.max_answer_bytes, deadline=net.deadline
    )


def graph_tokens(
    cfg: Config,
    secret: SecretStr,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    network: Proxies | None = None,
) -> MsalToken | None:
    """msal for an https authority; ``None`` keeps the plain POST (http loopback only).

    ``secret`` is the client secret, or with ``graph.certificate`` the PEM private key.
    """
    g = cfg.graph
    if transport is not None or not g.authority.startswith("https://"):
        return None
    verify(g.ca_file)
    return MsalToken(
        authority=g.authority,
        tenant_id=g.tenant_id,
        client_id=g.client_id,
        secret=None if g.certificate else secret,
        private_key=secret if g.certificate else None,
        thumbprint=g.certificate.thumbprint if g.certificate else None,
        ca_file=g.ca_file,
        timeout=g.timeout,
        proxies=network if network is not None else proxies(cfg),
    )


def scim_credential(
    cfg: Config, secrets: Secrets, http: httpx.AsyncClient
) -> SecretStr | TokenSource:
    """The static SCIM token, or a Zoom OAuth source (``secrets.scim_token`` is then the
    OAuth client secret, never sent as a bearer token)."""
    oauth = cfg.target.oauth
    if oauth is None:
        return secrets.scim_token
    return ZoomOAuth(
        oauth.token_url,
        oauth.account_id,
        oauth.client_id,
        secrets.scim_token,
        http,
        bounds=bounds(cfg),
    )
