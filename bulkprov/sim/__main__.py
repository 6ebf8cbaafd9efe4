"""``python -m bulkprov.sim``: serve a simulated Graph tenant and Zoom SCIM service on loopback.

Prints one JSON line with the URLs, tenant id and client id (never the secrets: the caller
chose them) and serves until SIGTERM or SIGINT. Benchmarks run it as a separate process, pinned
with ``--cpu``, so the simulators don't steal CPU from the client being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bulkprov.sim.faults import ALL_KINDS, GRAPH_KINDS, SOAK_KINDS, FaultPlan
from bulkprov.sim.graph.tenant import DEFAULT_CLIENT_ID, DEFAULT_TENANT_ID, GraphTenant
from bulkprov.sim.scim.limits import SHAPES
from bulkprov.sim.scim.service import ScimService
from bulkprov.sim.scim.zoom import ZoomRules
from bulkprov.sim.server import serve_simulators, write_port_file


def build_parser(prog: str = "python -m bulkprov.sim") -> argparse.ArgumentParser:
    """The command line (also documents every knob of both simulators); ``bulkprov sim``
    builds it with its own name and adds its options."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve a simulated Microsoft Graph tenant and a Zoom-like SCIM service on "
        "127.0.0.1 until SIGTERM/SIGINT.",
    )
    g = p.add_argument_group("Graph tenant")
    g.add_argument("--users", type=int, default=1000, help="number of users (default 1000)")
    g.add_argument("--seed", type=int, default=0, help="population seed (default 0)")
    g.add_argument("--tenant-id", default=DEFAULT_TENANT_ID)
    g.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    g.add_argument("--graph-secret", default="sim-graph-secret", help="accepted client secret")
    g.add_argument(
        "--graph-latency-ms", type=float, default=0.0, help="added per Graph API request"
    )
    g.add_argument(
        "--graph-throttle-every",
        type=int,
        default=None,
        metavar="N",
        help="answer every N-th Graph API request with 429",
    )
    g.add_argument(
        "--graph-retry-after",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="Retry-After of Graph's 429s (default 0.05)",
    )
    g.add_argument("--token-lifetime", type=int, default=3599, metavar="SECONDS")
    g.add_argument("--no-graph", action="store_true", help="don't start the Graph tenant")
    g.add_argument(
        "--entra-cutover",
        action="store_true",
        help="give the tenant a Zoom app with a running Entra provisioning job, and fill the "
        "SCIM service as that job left it (bulkprov.sim.cutover; `bulkprov demo --cutover`)",
    )
    g.add_argument(
        "--graph-tls-cert",
        default=None,
        metavar="PEM",
        help="serve the tenant over https with this certificate chain (for msal)",
    )
    g.add_argument(
        "--delta-changed-only",
        action="store_true",
        help="rounds of users/delta changes list only the changed properties of a user "
        "(as Graph does with Prefer: return=minimal)",
    )
    g.add_argument("--graph-tls-key", default=None, metavar="PEM", help="its private key")
    s = p.add_argument_group("SCIM service")
    s.add_argument("--scim-token", default="sim-scim-token", help="accepted Bearer token")
    s.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="REQ_PER_S",
        help="rate limit over all SCIM requests (default: unlimited)",
    )
    s.add_argument(
        "--limiter",
        choices=SHAPES,
        default="bucket",
        help="how the rate limit counts: token bucket (default), GCRA, fixed or sliding "
        "one-second window (bulkprov.sim.scim.limits)",
    )
    s.add_argument(
        "--burst",
        type=float,
        default=None,
        help="bucket or GCRA size (default: one second's worth; 1: strict spacing)",
    )
    s.add_argument(
        "--no-retry-after",
        action="store_true",
        help="send 429 without Retry-After (as Zoom documents none)",
    )
    s.add_argument(
        "--retry-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fixed Retry-After value instead of the computed integer",
    )
    s.add_argument("--latency-ms", type=float, default=0.0, help="added per SCIM request")
    s.add_argument("--max-page-size", type=int, default=100)
    s.add_argument("--id-style", choices=("zoom", "uuid"), default="zoom")
    s.add_argument("--id-seed", type=int, default=None)
    s.add_argument(
        "--no-track-posts",
        action="store_true",
        help="don't count POSTs per userName (saves memory at millions of users)",
    )
    s.add_argument(
        "--bulk-max-operations",
        type=int,
        default=0,
        metavar="N",
        help="offer /ServiceProviderConfig and SCIM Bulk with N operations (default: off, as Zoom)",
    )
    s.add_argument("--no-scim", action="store_true", help="don't start the SCIM service")
    z = p.add_argument_group(
        "strict Zoom mode (bulkprov.sim.scim.zoom: Zoom's documented and reported behaviour)"
    )
    z.add_argument(
        "--zoom",
        action="store_true",
        help="behave as Zoom: 406 without Accept: application/scim+json, PATCH only for "
        "active, partial PUT (userName/displayName/loginType changes ignored), userType "
        "values and seats, per-label rate limits, no /ServiceProviderConfig or /Bulk",
    )
    z.add_argument(
        "--zoom-light",
        type=float,
        default=None,
        metavar="REQ_PER_S",
        help="Light label (GET/PUT/PATCH/DELETE of one user) rate; Business+: 80",
    )
    z.add_argument(
        "--zoom-medium",
        type=float,
        default=None,
        metavar="REQ_PER_S",
        help="Medium label (lists, filters, POST) rate; Business+: 60",
    )
    z.add_argument("--zoom-post-label", choices=("light", "medium"), default="medium")
    z.add_argument(
        "--zoom-daily-limit",
        type=int,
        default=None,
        metavar="N",
        help="answer the daily-limit 429 (resume at 00:00 GMT) after N SCIM requests",
    )
    z.add_argument(
        "--zoom-managed-domains",
        default=None,
        metavar="D1,D2",
        help="email domains Zoom may set (default: any)",
    )
    z.add_argument(
        "--zoom-foreign-email",
        choices=("ignore", "refuse"),
        default="ignore",
        help="a work email outside the managed domains: ignored (200) or refused (400)",
    )
    z.add_argument("--zoom-licensed-seats", type=int, default=None, metavar="N")
    z.add_argument("--zoom-basic-cap", type=int, default=9_999, metavar="N")
    z.add_argument(
        "--zoom-pending",
        type=int,
        default=0,
        metavar="N",
        help="hold pending invitations for the userNames of the first N enabled tenant users "
        "whose index is a multiple of 97 (they are not listed; a filter answers 400)",
    )
    f = p.add_argument_group("fault injection (bulkprov.sim.faults; also POST /_sim/faults)")
    f.add_argument(
        "--faults",
        type=float,
        default=0.0,
        metavar="RATE",
        help="fault a fraction RATE (0-1) of SCIM requests (default 0)",
    )
    f.add_argument(
        "--fault-kinds",
        default=None,
        metavar="K1,K2",
        help=f"kinds to draw from (default: all but 401, which stops a run): {','.join(ALL_KINDS)}",
    )
    f.add_argument("--graph-faults", type=float, default=0.0, metavar="RATE")
    f.add_argument("--graph-fault-kinds", default=None, metavar="K1,K2")
    f.add_argument("--fault-seed", type=int, default=0)
    f.add_argument(
        "--fault-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long a 'timeout' fault holds the request (default 2)",
    )
    n = p.add_argument_group("process")
    n.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    n.add_argument("--graph-port", type=int, default=0, help="default: a free port")
    n.add_argument("--scim-port", type=int, default=0, help="default: a free port")
    n.add_argument("--port-file", default=None, help="also write the JSON line to this file")
    n.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    n.add_argument("--no-uvloop", action="store_true")
    return p


async def serve(
    args: argparse.Namespace, on_ready: Callable[[dict[str, Any]], None] | None = None
) -> None:
    """Start the servers, announce them, wait for a signal, shut down cleanly.

    ``on_ready`` is called with the announced JSON once the servers listen (``bulkprov sim
    --config-out`` writes its config there).
    """
    graph = None
    if not args.no_graph:
        graph = GraphTenant(
            args.users,
            args.seed,
            args.tenant_id,
            args.client_id,
            args.graph_secret,
            token_lifetime=args.token_lifetime,
            throttle_every=args.graph_throttle_every,
            retry_after=args.graph_retry_after,
            latency_ms=args.graph_latency_ms,
            delta_changed_only=args.delta_changed_only,
        )
    scim = None
    if not args.no_scim:
        retry_after: bool | float = True
        if args.no_retry_after:
            retry_after = False
        elif args.retry_after is not None:
            retry_after = args.retry_after
        scim = ScimService(
            args.scim_token,
            rate_limit=args.rate_limit,
            burst=args.burst,
            limiter=args.limiter,
            retry_after=retry_after,
            latency_ms=args.latency_ms,
            max_page_size=args.max_page_size,
            id_style=args.id_style,
            id_seed=args.id_seed,
            track_posts=not args.no_track_posts,
            bulk_max_operations=args.bulk_max_operations,
            zoom=zoom_rules(args),
        )
        if graph is not None and args.zoom_pending:
            for name in pending_user_names(graph, args.zoom_pending):
                scim.add_pending_user(name)
    if scim is not None and (args.faults or args.fault_kinds):
        scim.faults = FaultPlan.parse(
            args.faults,
            args.fault_kinds or SOAK_KINDS,
            args.fault_seed,
            timeout_seconds=args.fault_timeout,
        )
    if graph is not None and (args.graph_faults or args.graph_fault_kinds):
        graph.faults = FaultPlan.parse(
            args.graph_faults,
            args.graph_fault_kinds or GRAPH_KINDS,
            args.fault_seed + 1,
            timeout_seconds=args.fault_timeout,
        )
    cutover = None
    if args.entra_cutover:
        if graph is None or scim is None:
            raise SystemExit("--entra-cutover needs both simulators")
        from bulkprov.sim.cutover import seed_cutover

        cutover = seed_cutover(graph, scim)
        scim.reset_counters()
    graph_ssl = None
    if args.graph_tls_cert:
        graph_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        graph_ssl.load_cert_chain(args.graph_tls_cert, args.graph_tls_key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve_simulators(
        graph,
        scim,
        args.host,
        graph_port=args.graph_port,
        scim_port=args.scim_port,
        graph_ssl=graph_ssl,
    ) as sims:
        info = {**sims.as_json(), "pid": os.getpid()}
        if cutover is not None and graph is not None:
            # Entra's Tenant URL for the app is this SCIM service, known once it listens
            graph.synchronization.set_secrets(
                cutover.service_principal_id, sync_all=False, base_address=str(sims.scim_url)
            )
            info["service_principal_id"] = cutover.service_principal_id
            info["job_id"] = cutover.job_id
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        if args.port_file:
            write_port_file(args.port_file, info)
        if on_ready is not None:
            on_ready(info)
        await stop.wait()


def zoom_rules(args: argparse.Namespace) -> ZoomRules | None:
    """The strict Zoom mode the arguments ask for (``None`` without ``--zoom``)."""
    if not args.zoom:
        return None
    domains = (
        frozenset(d.strip() for d in args.zoom_managed_domains.split(",") if d.strip())
        if args.zoom_managed_domains
        else None
    )
    return ZoomRules(
        light=args.zoom_light,
        medium=args.zoom_medium,
        post_label=args.zoom_post_label,
        retry_after=args.retry_after is not None,  # Zoom documents no Retry-After
        daily_limit=args.zoom_daily_limit,
        managed_domains=domains,
        foreign_email=args.zoom_foreign_email,
        licensed_seats=args.zoom_licensed_seats,
        basic_cap=args.zoom_basic_cap,
    )


def pending_user_names(graph: GraphTenant, count: int) -> list[str]:
    """The userPrincipalNames of ``count`` enabled users, every 97th: pending invitations."""
    names: list[str] = []
    for index, user in enumerate(graph.iter_users()):
        if len(names) >= count:
            break
        if index % 97 == 0 and user.get("accountEnabled") is not False:
            names.append(str(user["userPrincipalName"]))
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace, on_ready: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Serve what ``args`` (from :func:`build_parser`) describe until a signal; exit code."""
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(serve(args, on_ready))
            return 0
    asyncio.run(serve(args, on_ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
