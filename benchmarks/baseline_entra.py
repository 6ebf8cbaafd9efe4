"""The Entra-style baseline: one user at a time, a filter GET then a POST (or a PATCH).

This is how the Entra provisioning service treats each user of an initial cycle (facts.md
§2.3: it queries the target by the matching attribute, then creates or updates), without its
own scheduling overheads: the best an Entra-shaped client can do against the same target.
It reads the same Graph pages and uses bulkprov's mapping so the users and bodies are the
same; only the request pattern differs. It keeps no state (no resume).

    python -m benchmarks.baseline_entra -c bench.toml --limit 5000

Prints one JSON line: users processed, SCIM requests sent, seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx

from bulkprov.config import load_config
from bulkprov.credentials import Secrets
from bulkprov.graph.client import GraphClient
from bulkprov.pipeline import Engine
from bulkprov.pipeline.decide import target_values
from bulkprov.scim import requests as rq
from bulkprov.scim.responses import classify, list_resources


async def baseline(config: str, limit: int) -> dict[str, Any]:
    cfg = load_config(config)
    secrets = Secrets.from_config(cfg)
    engine = Engine(cfg)
    headers = {
        "Authorization": f"Bearer {secrets.scim_token.get_secret_value()}",
        "Content-Type": "application/scim+json",
        "Accept": "application/scim+json",
    }
    base = cfg.target.base_url
    users = requests = 0
    started = time.perf_counter()
    # httpx's default transport: what a plain Python client of the target would use
    async with (
        httpx.AsyncClient(trust_env=False, timeout=30) as graph_http,
        httpx.AsyncClient(trust_env=False, timeout=30, headers=headers) as http,
    ):
        graph = GraphClient(
            authority=cfg.graph.authority,
            tenant_id=cfg.graph.tenant_id,
            client_id=cfg.graph.client_id,
            client_secret=secrets.graph_client_secret,
            base_url=cfg.graph.base_url,
            http=graph_http,
        )

        async def send(req: rq.ScimRequest) -> Any:
            nonlocal requests
            requests += 1
            r = await http.request(
                req.method, base + req.path, params=req.params or None, content=req.body
            )
            return classify(r.status_code, r.headers, r.content)

        first = graph.users_url(engine.select, cfg.graph.page_size)
        async for page in graph.pages(first):
            for user in page.users:
                if users >= limit:
                    break
                _, in_scope, _, mapped = engine.evaluate(user)
                users += 1
                if not in_scope or mapped is None:
                    continue
                path = engine.mapper.matching[0]
                found, _ = list_resources(
                    await send(rq.find_users(path, str(mapped.values.get(path))))
                )
                if not found:
                    await send(rq.create_user(mapped.body))
                    continue
                current = target_values(found[0], mapped.update_values)
                changes = rq.diff_values(mapped.update_values, current)
                if changes:
                    ops = rq.patch_operations(changes)
                    await send(rq.patch_user(str(found[0]["id"]), ops))
            if users >= limit:
                break
    return {"users": users, "requests": requests, "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("--limit", type=int, default=10**9, help="stop after this many users")
    args = ap.parse_args(argv)
    out = asyncio.run(baseline(args.config, args.limit))
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
