"""HTTP transports side by side: process CPU per SCIM POST, in one run.

bulkprov keeps httpx's API; what sends the bytes is a choice. Each candidate POSTs the same
users to the same SCIM simulator (a child process, on the other core), over ``concurrency``
connections, and the figure is this process's CPU time (user + system) per request. The
rounds alternate the candidates twice so a neighbour's load falls on all of them.

* ``httpx default``: httpx's own transport (httpcore, HTTP/1.1);
* ``httpx http2``: httpcore with ``http2=True``. Over cleartext ``http://`` httpx does not
  upgrade (no h2c), so on loopback it measures HTTP/1.1 through the HTTP/2-capable pool; the
  simulator (aiohttp) speaks no HTTP/2 either. Against Zoom (TLS + ALPN) it would be h2;
* ``httpx-aiohttp``: httpx's API over aiohttp's connection pool (the package, as it comes);
* ``bulkprov make_client``: :func:`bulkprov.transport.make_client`, what every bulkprov
  request goes through (``httpx-aiohttp``'s transport, bulkprov's TLS context and limits),
  through ``client.post`` as ``ScimClient`` sends;
* ``bulkprov make_client, send()``: the same, with the ``httpx.Request`` built directly and
  passed to ``client.send`` (skips ``build_request``'s merging of client defaults);
* ``aiohttp (raw)``: no httpx at all: the floor, for reference only.

    python -m benchmarks.bench_transport -n 10000 -c 32
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import secrets
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import httpx_aiohttp
import orjson

from bulkprov.sim.server import SimulatorProcess
from bulkprov.transport import Proxies, make_client


def body(i: int, prefix: str) -> bytes:
    name = f"{prefix}{i}@t.example"
    return orjson.dumps(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name,
            "active": True,
            "name": {"givenName": "T", "familyName": f"U{i}"},
            "emails": [{"primary": True, "type": "work", "value": name}],
        }
    )


def cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


async def drive(post: Callable[[bytes], Awaitable[int]], n: int, c: int) -> tuple[float, float]:
    prefix = f"t{secrets.token_hex(3)}-"
    bodies = [body(i, prefix) for i in range(n)]
    it = iter(bodies)
    bad = 0

    async def worker() -> None:
        nonlocal bad
        for b in it:
            if await post(b) != 201:
                bad += 1

    c0, t0 = cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    wall, used = time.perf_counter() - t0, cpu() - c0
    if bad:
        raise SystemExit(f"{bad} POSTs failed")
    return n / wall, used / n * 1e6


async def with_httpx(client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int, c: int):
    async with client:

        async def post(b: bytes) -> int:
            r = await client.post(url, content=b, headers=headers)
            return r.status_code

        return await drive(post, n, c)


async def with_httpx_send(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int, c: int
):
    extensions = {"timeout": client.timeout.as_dict()}
    async with client:

        async def post(b: bytes) -> int:
            request = httpx.Request("POST", url, content=b, headers=headers, extensions=extensions)
            r = await client.send(request)
            return r.status_code

        return await drive(post, n, c)


async def with_aiohttp(url: str, headers: dict[str, str], n: int, c: int):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as s:

        async def post(b: bytes) -> int:
            async with s.post(url, data=b, headers=headers) as r:
                await r.read()
                return r.status

        return await drive(post, n, c)


def candidates(c: int) -> dict[str, Callable[[str, dict[str, str], int], Awaitable]]:
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    return {
        "httpx default": lambda u, h, n: with_httpx(
            httpx.AsyncClient(limits=limits, trust_env=False), u, h, n, c
        ),
        "httpx http2": lambda u, h, n: with_httpx(
            httpx.AsyncClient(limits=limits, http2=True, trust_env=False), u, h, n, c
        ),
        "httpx-aiohttp": lambda u, h, n: with_httpx(
            httpx.AsyncClient(
                transport=httpx_aiohttp.AiohttpTransport(
                    client=lambda: aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=c), timeout=aiohttp.ClientTimeout()
                    )
                ),
                timeout=30,
                trust_env=False,
            ),
            u,
            h,
            n,
            c,
        ),
        "bulkprov make_client": lambda u, h, n: with_httpx(
            make_client(timeout=30, max_connections=c, proxies=Proxies()), u, h, n, c
        ),
        "bulkprov make_client, send()": lambda u, h, n: with_httpx_send(
            make_client(timeout=30, max_connections=c, proxies=Proxies()), u, h, n, c
        ),
        "aiohttp (raw)": lambda u, h, n: with_aiohttp(u, h, n, c),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, default=10_000, help="POSTs per candidate per round")
    ap.add_argument("-c", "--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", action="append", default=[], help="run only this candidate")
    args = ap.parse_args(argv)
    token = secrets.token_urlsafe(16)
    sim = SimulatorProcess(["--no-graph", f"--scim-token={token}", "--no-track-posts"])
    sim.start()
    try:
        url = sim.info["scim_url"] + "/Users"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
        results: dict[str, list[tuple[float, float]]] = {}
        names = [n for n in candidates(args.concurrency) if not args.only or n in args.only]
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                make = candidates(args.concurrency)[name]
                results.setdefault(name, []).append(asyncio.run(make(url, headers, args.n)))
    finally:
        sim.stop()
    print(
        f"| transport (c={args.concurrency}, {args.n:,} POSTs × {args.rounds}) "
        "| POSTs/s | CPU µs/request (min of rounds) |"
    )
    print("|---|---|---|")
    for name in names:
        rate = max(x[0] for x in results[name])
        us = min(x[1] for x in results[name])
        print(f"| {name} | {rate:,.0f} | {us:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
