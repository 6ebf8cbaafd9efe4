"""``bulkprov demo``: the whole product on the embedded simulators, checked at the end.

1. start the Graph tenant and the SCIM service in its strict Zoom mode (``sim --zoom``) in a
   subprocess on loopback (so they run on the other core), seeded with N users, some of
   whose userNames pending Zoom invitations hold;
2. write a config with the Zoom profile pointing at them (secrets passed through the
   environment only; Zoom's rate limits scaled by ``--rate-scale`` for both sides);
3. run ``bulkprov sync`` as a subprocess, interrupt it with SIGINT mid-run, run it again
   to resume;
4. change users in Graph (department, surname, mail; a tenth of the mails outside Zoom's
   managed domains) and disable others, and run an incremental cycle;
5. read the SCIM store and the provisioning log back and check the end state exactly:
   each change applied or a Warning naming the value Zoom kept, disabled users inactive,
   pending users Skipped and never created, no duplicate, no quarantine; print the
   requests per user.

``--cutover`` runs the cut-over instead (:func:`run_cutover_demo`): the tenant has a Zoom
app whose Entra provisioning job runs, and Zoom holds what that job left (stale, failed and
unmanaged accounts among the provisioned ones); ``bulkprov migrate`` writes the config from
the job and shows the plan, ``bulkprov migrate --pause-entra`` pauses the job and runs the
first sync, and the check compares the store with the plan: only the drift was sent.

:func:`write_demo_config` and :func:`verify_store` serve the benchmarks and the end-to-end
tests as well. httpx, the mapping compiler and the simulators are imported inside the
functions that use them, so that ``bulkprov --help`` does not load them. With :mod:`.sim`,
the only command module that imports :mod:`bulkprov.sim`.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from bulkprov.commands._shared import EPILOG, _fail, echo
from bulkprov.errors import BulkProvError

GRAPH_SECRET_ENV = "BULKPROV_GRAPH_SECRET"
SCIM_TOKEN_ENV = "BULKPROV_SCIM_TOKEN"


@click.command(epilog=EPILOG)
@click.option("--users", type=int, default=20_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the demo's config and state go (default: a temporary directory).",
)
@click.option("--concurrency", type=int, default=32, show_default=True)
@click.option("--no-interrupt", is_flag=True, help="Do not interrupt and resume mid-run.")
@click.option(
    "--rate-scale",
    type=float,
    default=50.0,
    show_default=True,
    help="Zoom's Business+ limits (Light 80/s, Medium 60/s) times this, for the simulated "
    "Zoom and for bulkprov alike; 1 paces at Zoom's real limits (slow: 60 creates/s).",
)
@click.option(
    "--pending",
    type=int,
    default=25,
    show_default=True,
    help="Users whose userName a pending Zoom invitation holds.",
)
@click.option("--changed", type=int, default=100, show_default=True)
@click.option("--disabled", type=int, default=30, show_default=True)
@click.option(
    "--cutover",
    is_flag=True,
    help="Take over from a running Entra provisioning job instead (bulkprov migrate).",
)
def demo(
    users: int,
    seed: int,
    workdir: Path | None,
    concurrency: int,
    no_interrupt: bool,
    rate_scale: float,
    pending: int,
    changed: int,
    disabled: int,
    cutover: bool,
) -> None:
    """Sync a simulated tenant into a strict simulated Zoom, interrupt, resume, change, check.

    Starts the Graph tenant and the SCIM simulator in its strict Zoom mode (`bulkprov sim
    --zoom`: PATCH only for active, partial PUTs that may be ignored, pending invitations,
    per-label rate limits) on free loopback ports, seeds USERS users (PENDING of them held by
    pending invitations), and runs the initial sync with the Zoom profile, interrupting it
    (SIGINT) mid-run and resuming it. Then CHANGED users get a new department, surname and
    mail (a tenth of the mails outside Zoom's managed domains) and DISABLED users are
    disabled in Graph, and an incremental cycle runs. The end state is checked exactly:
    every change applied or reported as a Warning with Zoom's reason, pending users Skipped
    and never created, no quarantine; requests per user are printed.

    With --cutover, the tenant has an Entra provisioning job for Zoom and Zoom holds what it
    provisioned: `bulkprov migrate` reads the job, writes the config and shows the
    cut-over, `bulkprov migrate --pause-entra` pauses the job and runs the first sync, and
    the check confirms that only the drift was sent.

    \b
    Examples:
      bulkprov demo --users 5000
      bulkprov demo --cutover --users 5000
    """
    try:
        if cutover:
            ok = run_cutover_demo(users=users, seed=seed, workdir=workdir)
        else:
            ok = run_demo(
                users=users,
                seed=seed,
                workdir=workdir,
                concurrency=concurrency,
                interrupt=not no_interrupt,
                rate_scale=rate_scale,
                pending=pending,
                changed=changed,
                disabled=disabled,
            )
    except BulkProvError as exc:
        _fail(exc)
    sys.exit(0 if ok else 1)


def write_demo_config(
    path: Path,
    info: dict[str, Any],
    state: Path,
    concurrency: int,
    rate_limit: float = 0,
    page_size: int = 999,
    *,
    profile: str = "rfc",
    light: float = 0,
    medium: float = 0,
) -> None:
    """The starter config, pointed at the simulators (the demo, benchmarks and tests use it).

    ``profile="rfc"`` (the default: the simulator's RFC 7644 mode) paces at ``rate_limit``
    (0: unlimited); ``profile="zoom"`` (the strict Zoom mode, ``sim --zoom``) paces Light
    and Medium at ``light`` and ``medium`` requests/s (0: unpaced), both together under
    ``rate_limit`` (0: no such cap).
    """
    from bulkprov.commands.starter import STARTER_TOML

    text = STARTER_TOML
    text = text.replace(
        'tenant_id = "00000000-0000-0000-0000-000000000000"', f'tenant_id = "{info["tenant_id"]}"'
    )
    text = text.replace(
        'client_id = "00000000-0000-0000-0000-000000000000"', f'client_id = "{info["client_id"]}"'
    )
    text = text.replace(
        '# authority = "https://login.microsoftonline.com"',
        f'authority = "{info["authority_url"]}"',
    )
    text = text.replace(
        '# base_url = "https://graph.microsoft.com/v1.0"', f'base_url = "{info["graph_api_url"]}"'
    )
    text = text.replace(
        'base_url = "https://api.zoom.us/scim2"', f'base_url = "{info["scim_url"]}"'
    )
    text = text.replace("# page_size = 999 ", f"page_size = {page_size} ")
    text = text.replace("concurrency = 16", f"concurrency = {concurrency}")
    text = text.replace("rate_limit = 60", f"rate_limit = {rate_limit}")
    if profile == "zoom":
        text = text.replace("light_per_second = 80", f"light_per_second = {light}")
        text = text.replace("medium_per_second = 60", f"medium_per_second = {medium}")
    else:
        text = text.replace('profile = "zoom"', 'profile = "rfc"')
    text = text.replace('path = "bulkprov-state.sqlite3"', f'path = "{state}"')
    path.write_text(text, encoding="utf-8")


def verify_store(
    config_path: Path, users: int, seed: int, scim_url: str, token: str
) -> tuple[bool, list[str]]:
    """Compare the SCIM store with the mapping's output for every in-scope user."""
    import httpx

    from bulkprov.config import load_config
    from bulkprov.mapping import MappingContext, compile_mappings
    from bulkprov.scim.paths import get_value
    from bulkprov.sim.users import generate_user

    cfg = load_config(config_path)
    mapper = compile_mappings(cfg.mappings)
    base = scim_url.rsplit("/scim2", 1)[0]
    store = httpx.get(f"{base}/_sim/store", timeout=60, trust_env=False).json()
    counters = httpx.get(f"{base}/_sim/counters", timeout=60, trust_env=False).json()
    resources = store["Resources"] if isinstance(store, dict) else store
    by_name: dict[str, list[dict[str, Any]]] = {}
    for res in resources:
        by_name.setdefault(str(res.get("userName", "")).lower(), []).append(res)
    problems: list[str] = []
    expected = 0
    wrong = missing = 0
    for i in range(users):
        user = generate_user(i, seed)
        if user.get("accountEnabled") is False:
            continue
        expected += 1
        mapped = mapper.map_user(user, MappingContext(is_soft_deleted=False))
        found = by_name.get(str(mapped.user_name).lower(), [])
        if not found:
            missing += 1
            if missing <= 5:
                problems.append(f"missing: {mapped.user_name}")
            continue
        for path, value in mapped.values.items():
            if get_value(found[0], path) != value:
                wrong += 1
                if wrong <= 5:
                    problems.append(
                        f"{mapped.user_name}: {path} is {get_value(found[0], path)!r}, "
                        f"expected {value!r}"
                    )
                break
    duplicates = sum(len(v) - 1 for v in by_name.values() if len(v) > 1)
    posted_twice = len(counters.get("duplicate_posts", {}))
    extra = len(resources) - (expected - missing) - duplicates
    lines = [
        f"in-scope users: {expected:,}   in the SCIM store: {len(resources):,}",
        (
            f"missing: {missing}   duplicates: {duplicates}   extra: {max(extra, 0)}   "
            f"wrong attributes: {wrong}   userNames POSTed twice: {posted_twice}"
        ),
    ]
    ok = missing == 0 and duplicates == 0 and wrong == 0 and posted_twice == 0 and extra <= 0
    return ok, lines + problems


#: the email domains the demo's simulated Zoom manages (the generated tenant's own)
MANAGED_DOMAINS = ("corp.example", "eu.corp.example", "example.com")


def plan_changes(
    users: int, seed: int, pending: set[str], changed: int, disabled: int
) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """The demo's Graph changes: index → new department/surname/mail (one mail in ten
    outside the managed domains), and the indexes to disable; pending users are left out."""
    from bulkprov.sim.users import generate_user

    changes: dict[int, dict[str, Any]] = {}
    to_disable: list[int] = []
    for i in range(users):
        if len(changes) >= changed and len(to_disable) >= disabled:
            break
        user = generate_user(i, seed)
        if user.get("accountEnabled") is False or user["userPrincipalName"].lower() in pending:
            continue
        if len(changes) < changed:
            local = user["userPrincipalName"].split("@", 1)[0]
            domain = "personal.example" if len(changes) % 10 == 9 else "example.com"
            changes[i] = {
                "department": f"Demo Dept {len(changes) % 7}",
                "surname": f"{user.get('surname') or 'Demo'}-Changed",
                "mail": f"{local}.moved@{domain}",
            }
        else:
            to_disable.append(i)
    return changes, to_disable


def verify_zoom_demo(
    config_path: Path,
    users: int,
    seed: int,
    scim_url: str,
    pending: set[str],
    changes: dict[int, dict[str, Any]],
    disabled: list[int],
) -> tuple[bool, list[str]]:
    """The end state, exactly: every in-scope user's account holds the mapping's values for
    its changed Graph user, except what the last run logged as a Warning naming the value
    Zoom kept; disabled users inactive; pending users absent and Skipped with the reason."""
    import anyio
    import httpx

    from bulkprov.checkpoint.store import StateStore
    from bulkprov.config import load_config
    from bulkprov.mapping import MappingContext, compile_mappings
    from bulkprov.scim.paths import get_value
    from bulkprov.sim.users import generate_user

    cfg = load_config(config_path)
    mapper = compile_mappings(cfg.mappings)
    base = scim_url.rsplit("/scim2", 1)[0]
    store = httpx.get(f"{base}/_sim/store", timeout=60, trust_env=False).json()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for res in store:
        by_name.setdefault(str(res.get("userName", "")).lower(), []).append(res)

    async def log() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with await StateStore.open(cfg.state.path) as db:
            run = await db.last_run()
            entries = await db.log_entries(run_id=run.id if run else None, limit=None)
            return entries, await db.runs(10)

    entries, runs = anyio.run(log)
    last: dict[str, dict[str, Any]] = {}
    for e in entries:
        last[str(e["graph_id"])] = e
    problems: list[str] = []
    off = set(disabled)
    expected = applied = warned = missing = wrong = skipped_pending = 0
    in_scope: set[str] = set()
    for i in range(users):
        user = generate_user(i, seed)
        if user.get("accountEnabled") is False:
            continue
        name = user["userPrincipalName"].lower()
        if name in pending:
            entry = last.get(user["id"])
            if name in by_name:
                problems.append(f"pending user created: {name}")
            elif entry is None or "PendingInvitation" not in str(entry.get("reason")):
                problems.append(f"pending user not reported as PendingInvitation: {name}")
            else:
                skipped_pending += 1
            continue
        expected += 1
        in_scope.add(name)
        before = mapper.map_user(user, MappingContext())
        after = mapper.map_user({**user, **changes.get(i, {})}, MappingContext())
        found = by_name.get(name, [])
        if len(found) != 1:
            missing += 1
            problems.append(f"{name}: {len(found)} accounts")
            continue
        account = found[0]
        if i in off:
            if account.get("active") is not False:
                wrong += 1
                problems.append(f"{name}: still active after being disabled in Graph")
            continue
        entry = last.get(user["id"], {})
        reason = str(entry.get("reason") or "")
        for path, value in after.values.items():
            have = get_value(account, path)
            if have == value:
                continue
            if (
                i in changes
                and entry.get("status") == "warning"
                and f"{path}: Zoom kept {have!r}" in reason
                and have == before.values.get(path)
            ):
                warned += 1
                continue
            wrong += 1
            if wrong <= 5:
                problems.append(f"{name}: {path} is {have!r}, expected {value!r}")
        if i in changes:
            applied += 1
    duplicates = sum(len(v) - 1 for v in by_name.values() if len(v) > 1)
    extra = sum(len(v) for name, v in by_name.items() if name not in in_scope)
    statuses = [r["status"] for r in runs]
    quarantined = [r for r in runs if "quarantined" in str(r.get("message") or "")]
    lines = [
        (
            f"in-scope users: {expected:,}   accounts in Zoom: {len(store):,}   "
            f"pending invitations: {len(pending):,} (Skipped: {skipped_pending:,}, created: 0)"
        ),
        (
            f"changed in Graph: {len(changes):,} (checked: {applied:,}; values Zoom kept, each "
            f"a Warning with its reason: {warned:,})   disabled in Graph: {len(off):,}"
        ),
        (
            f"missing: {missing}   duplicates: {duplicates}   extra: {extra}   wrong "
            f"attributes: {wrong}   quarantined runs: {len(quarantined)}   run statuses: "
            f"{', '.join(statuses)}"
        ),
    ]
    ok = (
        not problems
        and missing == 0
        and duplicates == 0
        and extra == 0
        and wrong == 0
        and not quarantined
        and all(s == "completed" for s in statuses)
        and skipped_pending == len(pending)
    )
    return ok, lines + problems[:10]


def _counters(base: str) -> dict[str, Any]:
    import httpx

    doc: dict[str, Any] = httpx.get(f"{base}/_sim/counters", timeout=30, trust_env=False).json()
    return doc


def run_demo(
    *,
    users: int,
    seed: int,
    workdir: Path | None,
    concurrency: int,
    interrupt: bool,
    rate_scale: float = 50.0,
    pending: int = 25,
    changed: int = 100,
    disabled: int = 30,
) -> bool:
    import httpx

    from bulkprov.sim.server import SimulatorProcess

    work = workdir or Path(tempfile.mkdtemp(prefix="bulkprov-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    token, graph_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    env = dict(os.environ, **{GRAPH_SECRET_ENV: graph_secret, SCIM_TOKEN_ENV: token})
    light, medium = 80 * rate_scale, 60 * rate_scale
    click.secho(f"bulkprov demo: {users:,} users, workdir {work}", bold=True)
    click.echo(
        f"simulated Zoom, strict mode: Light {light:g}/s, Medium {medium:g}/s (Zoom's Business+ "
        f"limits x{rate_scale:g}), {pending} pending invitations"
    )
    sim = SimulatorProcess(
        [
            "--users",
            str(users),
            "--seed",
            str(seed),
            # "=" form: a random secret may start with "-" (argparse would take it for an
            # option; the demo then failed about once in 30 runs)
            f"--scim-token={token}",
            f"--graph-secret={graph_secret}",
            "--zoom",
            f"--zoom-light={light:g}",
            f"--zoom-medium={medium:g}",
            f"--zoom-pending={pending}",
            f"--zoom-managed-domains={','.join(MANAGED_DOMAINS)}",
        ]
    )
    sim.start()
    try:
        info = sim.info
        click.echo(f"simulators: Graph {info['graph_api_url']}   SCIM {info['scim_url']}")
        base = info["scim_url"].rsplit("/scim2", 1)[0]
        graph_base = info["graph_api_url"].rsplit("/v1.0", 1)[0]
        config_path = work / "bulkprov.toml"
        state = work / "state.sqlite3"
        for stale in (
            state,
            state.with_name(state.name + "-wal"),
            state.with_name(state.name + "-shm"),
        ):
            stale.unlink(missing_ok=True)
        write_demo_config(
            config_path, info, state, concurrency, profile="zoom", light=light, medium=medium
        )
        cmd = [
            sys.executable,
            "-m",
            "bulkprov",
            "sync",
            "-c",
            str(config_path),
            "--expect",
            str(users),
        ]
        click.secho("-- 1. the initial sync --", fg="yellow")
        started = time.monotonic()
        if interrupt:
            proc = subprocess.Popen(cmd, env=env)
            while proc.poll() is None:
                time.sleep(0.05)
                try:
                    posts = _counters(base)
                except httpx.HTTPError:
                    continue
                if posts.get("by_method", {}).get("POST", 0) >= users * 0.4:
                    proc.send_signal(signal.SIGINT)
                    click.secho("\n-- interrupting the sync (SIGINT) at ~40% --", fg="yellow")
                    break
            code = proc.wait()
            if code not in (0, 130):
                click.secho(f"the sync failed (exit {code})", fg="red")
                return False
            click.secho("-- resuming: the same command again --", fg="yellow")
        code = subprocess.call(cmd, env=env)
        initial = time.monotonic() - started
        if code != 0:
            click.secho(f"the sync failed (exit {code})", fg="red")
            return False
        first = _counters(base)
        held = {
            n.lower() for n in httpx.get(f"{base}/_sim/pending", timeout=30, trust_env=False).json()
        }
        changes, to_disable = plan_changes(users, seed, held, changed, disabled)
        from bulkprov.sim.users import generate_user

        with httpx.Client(trust_env=False, timeout=30) as http:
            for i, change in changes.items():
                http.patch(
                    f"{graph_base}/_sim/users/{generate_user(i, seed)['id']}", json=change
                ).raise_for_status()
            for i in to_disable:
                http.patch(
                    f"{graph_base}/_sim/users/{generate_user(i, seed)['id']}",
                    json={"accountEnabled": False},
                ).raise_for_status()
            http.post(f"{base}/_sim/reset_counters").raise_for_status()
        click.secho(
            f"-- 2. in Graph: {len(changes)} users' department, surname and mail changed, "
            f"{len(to_disable)} disabled; an incremental cycle --",
            fg="yellow",
        )
        started = time.monotonic()
        code = subprocess.call(cmd[:-2], env=env)
        incremental = time.monotonic() - started
        if code != 0:
            click.secho(f"the incremental sync failed (exit {code})", fg="red")
            return False
        second = _counters(base)
        subprocess.call(
            [sys.executable, "-m", "bulkprov", "status", "-c", str(config_path)], env=env
        )
        ok, lines = verify_zoom_demo(
            config_path, users, seed, info["scim_url"], held, changes, to_disable
        )
        click.echo("check against the simulated Zoom and the provisioning log:")
        for line in lines:  # they name users: printed as every value is (echo)
            echo(line, prefix="  ")
        touched = len(changes) + len(to_disable)
        click.echo(
            f"requests per user: initial sync {first['total'] / max(users, 1):.3f} "
            f"({first['total']:,} for {users:,} users: {_methods(first)}); incremental cycle "
            f"{second['total'] / max(touched, 1):.2f} per changed user ({second['total']:,} "
            f"for {touched}: {_methods(second)})"
        )
        verdict = "PASSED" if ok else "FAILED"
        click.secho(
            f"demo {verdict} in {initial + incremental:.1f} s (initial {initial:.1f} s, "
            f"incremental {incremental:.1f} s)",
            fg="green" if ok else "red",
            bold=True,
        )
        return ok
    finally:
        sim.stop()


def _methods(counters: dict[str, Any]) -> str:
    return ", ".join(f"{m} {n:,}" for m, n in sorted(counters.get("by_method", {}).items()))


def verify_cutover(
    config_path: Path, plan: dict[str, Any], users: int, seed: int, scim_url: str
) -> tuple[bool, list[str]]:
    """After ``migrate --pause-entra``: every user the plan linked or created holds the
    mapping's values, exactly the plan's drift and creates were sent, no account twice, and
    the accounts nobody manages are as they were."""
    import httpx

    from bulkprov.config import load_config
    from bulkprov.mapping import MappingContext, compile_mappings
    from bulkprov.scim.paths import get_value
    from bulkprov.sim.users import generate_user

    cfg = load_config(config_path)
    mapper = compile_mappings(cfg.mappings)
    expected: dict[str, dict[str, Any]] = {}
    for i in range(users):
        mapped = mapper.map_user(generate_user(i, seed), MappingContext(is_soft_deleted=False))
        expected[str(mapped.user_name).lower()] = mapped.values
    base = scim_url.rsplit("/scim2", 1)[0]
    store = httpx.get(f"{base}/_sim/store", timeout=60, trust_env=False).json()
    counters = httpx.get(f"{base}/_sim/counters", timeout=60, trust_env=False).json()
    resources = store["Resources"] if isinstance(store, dict) else store
    by_name: dict[str, list[dict[str, Any]]] = {}
    for res in resources:
        by_name.setdefault(str(res.get("userName", "")).lower(), []).append(res)
    ops = [op for op in plan["operations"] if op["action"] in ("link", "create")]
    wrong = [
        op["user_name"]
        for op in ops
        if len(found := by_name.get(str(op["user_name"]).lower(), [])) != 1
        or any(get_value(found[0], p) != v for p, v in expected[op["user_name"].lower()].items())
    ]
    creates = sum(op["action"] == "create" for op in ops)
    drift = sum(op["action"] == "link" and bool(op["changes"]) for op in ops)
    sent = counters.get("by_method", {})
    left = [
        a["user_name"]
        for a in plan.get("unmanaged", [])
        if [r.get("active") for r in by_name.get(str(a["user_name"]).lower(), [])] != [a["active"]]
    ]
    duplicates = sum(len(v) - 1 for v in by_name.values() if len(v) > 1)
    lines = [
        (
            f"in scope: {len(ops):,} ({len(ops) - creates - drift:,} in sync, {drift:,} drifted, "
            f"{creates:,} absent)   accounts nobody manages: {len(plan.get('unmanaged', [])):,}"
        ),
        (
            f"sent: POST {sent.get('POST', 0):,} (plan: {creates:,})   PATCH "
            f"{sent.get('PATCH', 0):,} (plan: {drift:,})   PUT {sent.get('PUT', 0)}   DELETE "
            f"{sent.get('DELETE', 0)}"
        ),
        (
            f"wrong or missing: {len(wrong)}   duplicates: {duplicates}   unmanaged changed: "
            f"{len(left)}"
        ),
        *(f"wrong: {name}" for name in wrong[:5]),
    ]
    ok = (
        not wrong
        and not left
        and duplicates == 0
        and sent.get("POST", 0) == creates
        and sent.get("PATCH", 0) == drift
        and not sent.get("PUT")
        and not sent.get("DELETE")
    )
    return ok, lines


def run_cutover_demo(*, users: int, seed: int, workdir: Path | None) -> bool:
    """``bulkprov demo --cutover``: the cut-over from a running Entra job, checked."""
    import httpx

    from bulkprov import _json
    from bulkprov.sim.server import SimulatorProcess

    work = workdir or Path(tempfile.mkdtemp(prefix="bulkprov-cutover-"))
    work.mkdir(parents=True, exist_ok=True)
    token, graph_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    env = dict(os.environ, **{GRAPH_SECRET_ENV: graph_secret, SCIM_TOKEN_ENV: token})
    click.secho(f"bulkprov demo --cutover: {users:,} users, workdir {work}", bold=True)
    config_path = work / "bulkprov.toml"
    for stale in (
        config_path,
        work / "cutover-plan.json",
        work / "bulkprov-state.sqlite3",
        work / "bulkprov-state.sqlite3-wal",
        work / "bulkprov-state.sqlite3-shm",
    ):
        stale.unlink(missing_ok=True)
    sim = SimulatorProcess(
        [
            "--users",
            str(users),
            "--seed",
            str(seed),
            "--entra-cutover",
            f"--scim-token={token}",
            f"--graph-secret={graph_secret}",
        ],
        timeout=120.0,
    )
    sim.start()
    try:
        info = sim.info
        sp = info["service_principal_id"]
        click.echo(f"simulators: Graph {info['graph_api_url']}   SCIM {info['scim_url']}")
        click.echo(f"Entra's Zoom app: service principal {sp}, provisioning job {info['job_id']}")
        migrate = [
            sys.executable,
            "-m",
            "bulkprov",
            "migrate",
            "-c",
            str(config_path),
            "--service-principal",
            sp,
        ]
        connect = [
            "--tenant-id",
            info["tenant_id"],
            "--client-id",
            info["client_id"],
            "--authority",
            info["authority_url"],
            "--graph-url",
            info["graph_api_url"],
        ]
        click.secho("-- bulkprov migrate: read the job, write the config, plan --", fg="yellow")
        started = time.monotonic()
        if subprocess.call([*migrate, *connect], env=env) != 0:
            click.secho("migrate failed", fg="red")
            return False
        click.secho("-- bulkprov migrate --pause-entra: switch --", fg="yellow")
        if subprocess.call([*migrate, "--pause-entra"], env=env) not in (0,):
            click.secho("the switch failed", fg="red")
            return False
        elapsed = time.monotonic() - started
        plan = _json.loads((work / "cutover-plan.json").read_bytes())
        ok, lines = verify_cutover(config_path, plan, users, seed, info["scim_url"])
        jobs = httpx.get(
            f"{info['graph_url']}/_sim/synchronization", timeout=30, trust_env=False
        ).json()
        codes = [j["status"]["code"] for j in jobs["jobs"].get(sp, [])]
        ok = ok and codes == ["Paused"]
        click.echo("check against the SCIM store and Entra's job:")
        for line in [*lines, f"Entra's job: {', '.join(codes) or 'none'}"]:
            click.echo(f"  {line}")
        verdict = "PASSED" if ok else "FAILED"
        click.secho(
            f"cut-over demo {verdict} in {elapsed:.1f} s", fg="green" if ok else "red", bold=True
        )
        return ok
    finally:
        sim.stop()
