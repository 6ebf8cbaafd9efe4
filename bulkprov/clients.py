"""The Graph and SCIM clients of one command, built from the config in one place.

``sync``, ``plan`` and ``provision``/``test-connection`` all talk to the same two services
with the same TLS, token and retry rules; only their connection counts and the SCIM
request budget differ.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx

from . import credentials
from .graph.client import GraphClient
from .http import make_client
from .retry import RetryPolicy
from .scim.client import ScimClient

if TYPE_CHECKING:
    from .config import Config
    from .pipeline import Secrets


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
    rate_limit: float = 0.0,
    adaptive: bool = True,
) -> AsyncIterator[tuple[GraphClient, ScimClient]]:
    """Open both HTTP clients; ``scim_policy`` defaults to ``policy``."""
    graph_http = make_client(
        timeout=cfg.graph.timeout,
        max_connections=4,
        transport=graph_transport,
        verify=credentials.verify(cfg.graph.ca_file),
    )
    scim_http = make_client(
        timeout=cfg.target.timeout,
        max_connections=scim_connections,
        transport=scim_transport,
        verify=credentials.verify(cfg.target.ca_file),
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
                cfg, secrets.graph_client_secret, graph_transport
            ),
        )
        scim = ScimClient(
            cfg.target.base_url,
            credentials.scim_credential(cfg, secrets, scim_http),
            scim_http,
            rate_limit=rate_limit,
            adaptive=adaptive,
            policy=scim_policy or policy,
        )
        yield graph, scim
