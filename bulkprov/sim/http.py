"""Neutral request/response types for the simulators, and the adapters that serve them.

Each simulator is written once, as ``async def handle(SimRequest) -> SimResponse``. The same
handler is then reachable three ways:

* over real loopback sockets, through aiohttp's low-level server (:func:`make_server`) or an
  ``aiohttp.web.Application`` with one catch-all route (:func:`make_app`);
* in-process, through :class:`SimTransport`, an ``httpx`` transport, so unit tests exercise
  the client's real HTTP code (URL encoding, headers, status handling) with no sockets at all.

Keeping the model independent of aiohttp means there is exactly one behaviour to test, and the
HTTP layer stays a thin, obviously-correct translation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiohttp import web

__all__ = [
    "DROP_CONNECTION",
    "Handler",
    "SimRequest",
    "SimResponse",
    "SimTransport",
    "json_response",
    "make_app",
    "make_server",
]


@dataclass(slots=True)
class SimRequest:
    """One HTTP request as the simulators see it.

    ``path`` is percent-decoded (``/scim2/Users/k&Kd…`` when the client sent ``%26``), so a
    simulator never has to care how a client quoted an id. ``query`` keeps the first value of
    each parameter, decoded. ``headers`` keys are lower-cased. ``scheme`` only serves to build
    absolute links (Graph's ``@odata.nextLink``) that point back at the same server.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    scheme: str = "http"

    @property
    def host(self) -> str:
        """The ``Host`` header (``127.0.0.1:PORT``), used to build absolute URLs."""
        return self.headers.get("host", "localhost")

    @property
    def base_url(self) -> str:
        """``scheme://host`` of this request, for links the response must carry."""
        return f"{self.scheme}://{self.host}"


#: a :class:`SimResponse` status meaning "close the connection without answering" (a reset)
DROP_CONNECTION = 0


@dataclass(slots=True)
class SimResponse:
    """One HTTP response: status, body bytes and headers (``Content-Type`` included).

    Status :data:`DROP_CONNECTION` makes the adapters drop the connection instead (fault
    injection: the client sees a reset, not an answer).
    """

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[SimRequest], Awaitable[SimResponse]]

_DUMPS = orjson.dumps


def json_response(
    status: int,
    obj: Any,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> SimResponse:
    """Serialise ``obj`` with orjson (the handlers' hot path) into a :class:`SimResponse`."""
    h = {"Content-Type": content_type}
    if headers:
        h.update(headers)
    return SimResponse(status, _DUMPS(obj), h)


def _first_values(items: Any) -> dict[str, str]:
    """First value of each query key: repeated keys are not meaningful to either simulator."""
    out: dict[str, str] = {}
    for k, v in items:
        if k not in out:
            out[k] = v
    return out


# --------------------------------------------------------------------------- aiohttp adapter


def _aiohttp_handler(handler: Handler) -> Callable[[web.BaseRequest], Awaitable[web.Response]]:
    async def serve(request: web.BaseRequest) -> web.Response:
        body = await request.read() if request.body_exists else b""
        query = request.query
        sim = SimRequest(
            request.method,
            # ``path`` is the decoded path (``raw_path`` keeps %26); the query is separate,
            # so a decoded ``&`` here can never be mistaken for a parameter separator.
            request.path,
            _first_values(query.items()) if query else {},
            {k.lower(): v for k, v in request.headers.items()},
            body,
            request.scheme,
        )
        resp = await handler(sim)
        if resp.status == DROP_CONNECTION and request.transport is not None:
            request.transport.close()  # the client reads "server disconnected"
        return web.Response(status=resp.status or 500, body=resp.body, headers=resp.headers)

    return serve


def make_server(handler: Handler) -> web.Server:
    """aiohttp's low-level server around ``handler``: no router, no middleware, no access log.

    This is what :func:`bulkprov.sim.server.serve_simulators` runs, because the SCIM simulator
    is a benchmark target and the router/application layers cost CPU for nothing here.
    """
    return web.Server(_aiohttp_handler(handler), access_log=None)


def make_app(handler: Handler) -> web.Application:
    """An ``aiohttp.web.Application`` routing every method and path to ``handler``.

    For callers that want to mount the simulator in a larger aiohttp app (e.g. behind extra
    middleware); run it with ``web.AppRunner(app, access_log=None)``.
    """
    serve = _aiohttp_handler(handler)

    async def route(request: web.Request) -> web.StreamResponse:
        return await serve(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)
    return app


# ----------------------------------------------------------------------------- httpx adapter


class SimTransport(httpx.AsyncBaseTransport):
    """An httpx transport that calls a simulator's handler directly: no sockets, no threads.

    Usage: ``httpx.AsyncClient(transport=SimTransport(scim.handle), base_url="http://scim")``.
    Everything the client does to build the request (quoting, params, headers, body) still
    happens, so these tests cover the same client code path as a real socket would.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        url = request.url
        sim = SimRequest(
            request.method,
            url.path,  # httpx decodes the path, exactly like aiohttp's ``request.path``
            _first_values(url.params.multi_items()),
            {k.lower(): v for k, v in request.headers.items()},
            body,
            url.scheme,
        )
        resp = await self.handler(sim)
        if resp.status == DROP_CONNECTION:
            raise httpx.RemoteProtocolError("Server disconnected", request=request)
        return httpx.Response(resp.status, headers=resp.headers, content=resp.body, request=request)
