"""Simulators of a Microsoft Graph tenant and a Zoom-like SCIM 2.0 service.

One behavioural model per service (an ``async handle(SimRequest) -> SimResponse``), reachable
in-process through :class:`SimTransport` (httpx, no sockets), over loopback HTTP through
:func:`serve_simulators`, or from another process with ``python -m bulkprov.sim`` /
:class:`SimulatorProcess`. Tests and benchmarks use them instead of the real services.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bulkprov.sim.faults import Faults, NoFaults
from bulkprov.sim.graph.tenant import DEFAULT_CLIENT_ID, DEFAULT_TENANT_ID, GraphTenant
from bulkprov.sim.http import (
    SimRequest,
    SimResponse,
    SimTransport,
    json_response,
    make_app,
    make_server,
)
from bulkprov.sim.scim.service import ScimService, scim_error
from bulkprov.sim.server import SimServers, SimulatorProcess, serve_simulators
from bulkprov.sim.users import generate_user, generate_users, index_from_id, user_id

if TYPE_CHECKING:
    from bulkprov.sim.loadgen import LoadResult, measure_capacity, run_load

_LAZY = frozenset({"LoadResult", "measure_capacity", "run_load"})


def __getattr__(name: str) -> Any:
    # The load generator is imported on first use, so ``python -m bulkprov.sim.loadgen`` does
    # not find its own module already imported by the package (runpy's RuntimeWarning).
    if name in _LAZY:
        from bulkprov.sim import loadgen

        return getattr(loadgen, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_TENANT_ID",
    "Faults",
    "GraphTenant",
    "LoadResult",
    "NoFaults",
    "ScimService",
    "SimRequest",
    "SimResponse",
    "SimServers",
    "SimTransport",
    "SimulatorProcess",
    "generate_user",
    "generate_users",
    "index_from_id",
    "json_response",
    "make_app",
    "make_server",
    "measure_capacity",
    "run_load",
    "scim_error",
    "serve_simulators",
    "user_id",
]
