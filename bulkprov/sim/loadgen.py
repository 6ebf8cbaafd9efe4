"""A minimal SCIM load generator: how many POSTs per second can a SCIM server take?

The client is raw aiohttp, the cheapest general-purpose Python HTTP client (facts.md §9:
≈ 70-90 µs of CPU per POST); run the server in another process
(:class:`~bulkprov.sim.server.SimulatorProcess`, on another core). On these 2-core machines
the client can run out of CPU before the simulator does, so the figure is a lower bound of
the simulator's ceiling.

Benchmarks reuse :func:`measure_capacity` to know the ceiling a provisioning run is compared
against.

    python -m bulkprov.sim.loadgen http://127.0.0.1:PORT/scim2 --token T -n 20000 -c 32
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import orjson

__all__ = ["LoadResult", "measure_capacity", "run_load"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadResult:
    """Outcome of :func:`run_load`: counts per status and the wall time of the whole run."""

    requests: int
    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        """Completed requests per second (any status)."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def _user(i: int, prefix: str) -> bytes:
    # the shape Entra POSTs (facts.md §2.3), so the server does realistic work
    name = f"{prefix}{i}@load.example"
    return orjson.dumps(
        {
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:User",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            ],
            "externalId": f"{prefix}{i:08d}",
            "userName": name,
            "active": True,
            "emails": [{"primary": True, "type": "work", "value": name}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": f"Load User{i}", "familyName": f"User{i}", "givenName": "Load"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"},
        }
    )


async def run_load(
    scim_url: str,
    token: str,
    n: int,
    concurrency: int,
    *,
    prefix: str | None = None,
    allow_remote: bool = False,
) -> LoadResult:
    """POST ``n`` distinct users to ``{scim_url}/Users`` over ``concurrency`` connections.

    Refuses a non-loopback URL unless ``allow_remote``: this creates real accounts.
    """
    host = urlsplit(scim_url).hostname
    if host not in _LOOPBACK and not allow_remote:
        raise ValueError(f"refusing to load-test a non-loopback host: {host!r}")
    prefix = prefix if prefix is not None else f"load-{secrets.token_hex(4)}-"
    url = scim_url.rstrip("/") + "/Users"
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/scim+json",
        "Accept": "application/scim+json",
    }
    counter = itertools.count()
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in counter:
            if i >= n:
                return
            async with session.post(url, data=_user(i, prefix), headers=headers) as resp:
                await resp.read()
                statuses[resp.status] += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return LoadResult(sum(statuses.values()), elapsed, statuses)


async def measure_capacity(scim_url: str, token: str, n: int, concurrency: int) -> float:
    """Requests per second the server at ``scim_url`` completes for ``n`` user creations."""
    result = await run_load(scim_url, token, n, concurrency)
    return result.rate


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: prints one JSON line with the rate and the status counts."""
    p = argparse.ArgumentParser(prog="python -m bulkprov.sim.loadgen")
    p.add_argument("scim_url")
    p.add_argument("--token", required=True)
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("-c", "--concurrency", type=int, default=32)
    args = p.parse_args(argv)

    async def go() -> LoadResult:
        return await run_load(args.scim_url, args.token, args.n, args.concurrency)

    try:
        import uvloop

        result = uvloop.run(go())
    except ImportError:
        result = asyncio.run(go())
    out = {
        "requests": result.requests,
        "seconds": round(result.seconds, 3),
        "rate": round(result.rate, 1),
        "statuses": {str(k): v for k, v in result.statuses.items()},
    }
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
