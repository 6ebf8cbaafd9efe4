"""The Graph and SCIM clients of one command, built from the config in one place.

``sync``, ``plan``, ``approve`` and ``provision``/``test-connection`` all talk to the same two
services with the same TLS, token, pacing and retry rules (the target's rate limit and retry
budget from ``[target]``); only the sync opens ``target.concurrency`` connections, and the
on-demand commands give up sooner (:data:`QUICK`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx

from bulkprov import credentials
from bulkprov.graph.client import GraphClient, read_purposes
from bulkprov.retry import RetryPolicy
from bulkprov.scim.client import ScimClient
from bulkprov.transport import make_client

if TYPE_CHECKING:
    from bulkprov.config import Config
    from bulkprov.credentials import Secrets


#: the on-demand commands' target retry budget: a person is waiting for the answer
QUICK = RetryPolicy(max_attempts=3, max_seconds=30.0)


@asynccontextmanager
async def open_clients(
    cfg: Config,
    secrets: Secrets,
    *,
    graph_transport: httpx.AsyncBaseTransport | None = None,
    scim_transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
    scim_policy: RetryPolicy | None = None,
    scim_connections: int = 4,
) -> AsyncIterator[tuple[GraphClient, ScimClient]]:
    """Open both HTTP clients.

    ``policy`` is Graph's retry policy (and the target's, when given: tests); the target's
    defaults to ``scim_policy``, else ``[target]``'s ``max_attempts``/``max_retry_seconds``.
    """
    network = credentials.proxies(cfg, secrets)
    graph_http = make_client(
        timeout=cfg.graph.timeout,
        max_connections=4,
        transport=graph_transport,
        verify=credentials.verify(cfg.graph.ca_file),
        proxies=network,
    )
    scim_http = make_client(
        timeout=cfg.target.timeout,
        max_connections=scim_connections,
        transport=scim_transport,
        verify=credentials.verify(cfg.target.ca_file),
        proxies=network,
    )
    async with graph_http, scim_http:
        graph = GraphClient(
            authority=cfg.graph.authority,
            tenant_id=cfg.graph.tenant_id,
            client_id=cfg.graph.client_id,
            client_secret=secrets.graph_client_secret,
            base_url=cfg.graph.base_url,
            http=graph_http,
            policy=policy,
            token_source=credentials.graph_tokens(
                cfg, secrets.graph_client_secret, graph_transport, network=network
            ),
            bounds=credentials.bounds(cfg),
        )
        graph.purposes = read_purposes(cfg)  # a failed read names the setting behind it
        target = cfg.target
        zoom = target.zoom if target.zoom_profile else None
        scim = ScimClient(
            target.base_url,
            credentials.scim_credential(cfg, secrets, scim_http),
            scim_http,
            bounds=credentials.bounds(cfg),
            rate_limit=target.rate_limit,
            adaptive=target.adaptive,
            # Zoom: each rate-limit label paced on its own; no discovery endpoints (§6.2)
            labels=(
                {"light": zoom.light_per_second, "medium": zoom.medium_per_second}
                if zoom is not None
                else None
            ),
            post_label=zoom.post_label if zoom is not None else "medium",
            ceiling=target.zoom_ceiling,
            discovery=zoom is None,
            policy=policy
            or scim_policy
            or RetryPolicy(
                max_attempts=cfg.target.max_attempts, max_seconds=cfg.target.max_retry_seconds
            ),
        )
        yield graph, scim


@asynccontextmanager
async def open_graph(cfg: Config) -> AsyncIterator[GraphClient]:
    """A Graph client of ``cfg`` alone, for commands that read Graph but send nothing to the
    target (``mapping test --user``, ``migrate``): only the Graph secret is read, and the
    client has :func:`open_clients`' TLS, proxy, token and bounds rules."""
    cert = cfg.graph.certificate
    secret = (
        cert.private_key.read("graph.certificate.private_key", cfg.source_path)
        if cert
        else cfg.graph.client_secret.read("graph.client_secret", cfg.source_path)
    )
    network = credentials.proxies(cfg)
    async with make_client(
        timeout=cfg.graph.timeout,
        max_connections=2,
        verify=credentials.verify(cfg.graph.ca_file),
        proxies=network,
    ) as http:
        graph = GraphClient(
            authority=cfg.graph.authority,
            tenant_id=cfg.graph.tenant_id,
            client_id=cfg.graph.client_id,
            client_secret=secret,
            base_url=cfg.graph.base_url,
            http=http,
            token_source=credentials.graph_tokens(cfg, secret, network=network),
            bounds=credentials.bounds(cfg),
        )
        graph.purposes = read_purposes(cfg)
        yield graph
