"""The Zoom target profile against the strict Zoom simulator (issue 18), one test (or a few)
per behaviour, numbered as the issue numbers them:

1. updates: PATCH only for ``active``, PUT of ``schemas`` + changed fields otherwise;
2. writes Zoom may ignore: read back once, a Warning naming what Zoom kept;
3. pending invitations: Skipped with the reason and what to do, looked at again, no POST;
4. no discovery endpoints: nothing asks for /ServiceProviderConfig or /Bulk;
5. ``Accept: application/scim+json`` on every request (the simulator answers 406 otherwise);
6. rate limits per label, and the daily limit that stops a run cleanly;
7. licences: userType from the app role, Pro/Corp renamed with a Warning, refused values;
8. the seat guard;
9. group member PATCH bodies under 100,000 characters;
10. ``bulkprov duplicates``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import orjson
import pytest

from bulkprov.config import Config
from bulkprov.pipeline.run import run_sync
from bulkprov.sim import GraphTenant, NoFaults, ScimService
from bulkprov.sim.http import SimRequest, SimResponse
from bulkprov.sim.scim.zoom import ZoomRules
from bulkprov.sim.server import SimServers, serve_simulators

from .conftest import FAST_RETRY, GRAPH_SECRET, SCIM_TOKEN, SECRETS, make_config

DEPARTMENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
WORK_EMAIL = 'emails[type eq "work"].value'


class Spy(NoFaults):
    """Every SCIM request the simulator received: method, path, headers, parsed body."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []

    async def before(self, req: SimRequest) -> SimResponse | None:
        body = orjson.loads(req.body) if req.body else None
        self.seen.append((req.method, req.path, dict(req.headers), body))
        return None

    def writes(self) -> list[tuple[str, str, Any]]:
        return [(m, p, b) for m, p, _, b in self.seen if m in ("POST", "PUT", "PATCH", "DELETE")]


@pytest.fixture
def tenant() -> GraphTenant:
    return GraphTenant(user_count=120, seed=3, client_secret=GRAPH_SECRET)


@pytest.fixture
def rules() -> ZoomRules:
    return ZoomRules()


@pytest.fixture
def zoom(rules: ZoomRules) -> ScimService:
    """The strict Zoom simulator."""
    return ScimService(SCIM_TOKEN, id_seed=5, zoom=rules)


@pytest.fixture
async def servers(tenant: GraphTenant, zoom: ScimService) -> AsyncIterator[SimServers]:
    async with serve_simulators(tenant, zoom) as s:
        yield s


def zoom_config(servers: SimServers, tmp_path: Path, **overrides: Any) -> Config:
    zoom = {"light_per_second": 0, "medium_per_second": 0, **overrides.pop("zoom", {})}
    return make_config(
        servers, tmp_path / "s.db", target__profile="zoom", target__zoom=zoom, **overrides
    )


def enabled(tenant: GraphTenant) -> list[dict[str, Any]]:
    return [u for u in tenant.iter_users() if u.get("accountEnabled") is not False]


async def sync(cfg: Config, **kw: Any) -> Any:
    return await run_sync(cfg, SECRETS, policy=FAST_RETRY, **kw)


def test_init_writes_the_zoom_profile_and_rfc_stays_the_default(tmp_path):
    from click.testing import CliRunner

    from bulkprov.cli import main
    from bulkprov.config import load_config, parse_config

    path = tmp_path / "bulkprov.toml"
    assert CliRunner().invoke(main, ["init", "--path", str(path)]).exit_code == 0
    cfg = load_config(path)
    assert cfg.target.profile == "zoom" and cfg.target.zoom_profile
    assert (cfg.target.zoom.light_per_second, cfg.target.zoom.medium_per_second) == (80, 60)
    assert any(
        m.target == "userType" and m.expression == "SingleAppRoleAssignment([appRoleAssignments])"
        for m in cfg.mappings
    )
    other = parse_config(
        {
            "graph": {"tenant_id": "t", "client_id": "c"},
            "target": {"base_url": "https://scim.example"},
            "mappings": [{"target": "userName", "source": "mail", "matching_precedence": 1}],
        }
    )
    assert other.target.profile == "rfc" and not other.target.zoom_profile


# -- 5. Accept: application/scim+json --------------------------------------------------------


async def test_zoom_5_every_request_says_accept_scim_json(servers, tenant, zoom, tmp_path):
    spy = Spy()
    zoom.faults = spy
    cfg = zoom_config(servers, tmp_path)
    result = await sync(cfg)
    assert result.counts["created"] == len(enabled(tenant))
    tenant.update_user(enabled(tenant)[0]["id"], department="Accept Test")
    await sync(cfg)
    assert spy.seen and all(h.get("accept") == "application/scim+json" for _, _, h, _ in spy.seen)
    assert 406 not in zoom.statuses


async def test_zoom_5_the_strict_simulator_answers_406_without_it(servers):
    url = f"{servers.scim_url}/Users"
    auth = {"Authorization": f"Bearer {SCIM_TOKEN}"}
    async with httpx.AsyncClient(trust_env=False) as http:
        plain = await http.get(url, headers={**auth, "Accept": "application/json"})
        scim = await http.get(url, headers={**auth, "Accept": "application/scim+json"})
    assert plain.status_code == 406 and "application/scim+json" in plain.json()["detail"]
    assert scim.status_code == 200


# -- 4. no discovery endpoints ---------------------------------------------------------------


async def test_zoom_4_nothing_asks_for_service_provider_config_or_bulk(
    servers, tenant, zoom, tmp_path
):
    """Even with ``bulk = true`` the Zoom profile sends single requests and asks nothing."""
    spy = Spy()
    zoom.faults = spy
    cfg = zoom_config(servers, tmp_path, target__bulk=True)
    result = await sync(cfg)
    assert result.counts["created"] == len(enabled(tenant)) and result.counts["failed"] == 0
    paths = {p.rsplit("/scim2", 1)[1].split("/")[1] for _, p, _, _ in spy.seen}
    assert paths == {"Users"}
    assert 404 not in zoom.statuses


# -- 1. updates: PATCH only for active, PUT of the changed fields --------------------------


async def test_zoom_1_attribute_changes_go_by_put_and_active_by_patch(
    servers, tenant, zoom, tmp_path
):
    cfg = zoom_config(servers, tmp_path)
    await sync(cfg)
    a, b = enabled(tenant)[:2]
    tenant.update_user(a["id"], department="Research", surname="Newname")
    tenant.update_user(b["id"], accountEnabled=False)
    spy = Spy()
    zoom.faults = spy
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["disabled"] == 1
    assert result.counts["failed"] == 0
    writes = spy.writes()
    put = [w for w in writes if w[0] == "PUT"]
    patch = [w for w in writes if w[0] == "PATCH"]
    assert len(put) == 1 and len(patch) == 1
    body = put[0][2]
    # schemas plus only what changed; name travels whole (givenName beside familyName)
    assert body == {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ],
        "name": {"givenName": a["givenName"], "familyName": "Newname"},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Research"},
    }
    assert [op["path"] for op in patch[0][2]["Operations"]] == ["active"]
    stored = zoom.find(a["userPrincipalName"])
    assert stored["name"] == {"givenName": a["givenName"], "familyName": "Newname"}
    assert stored["displayName"] == a["displayName"] and stored["emails"]  # untouched
    assert zoom.find(b["userPrincipalName"])["active"] is False

    # re-enabled with a change: activated by PATCH first, then the PUT
    tenant.update_user(b["id"], accountEnabled=True, department="Back")
    spy.seen.clear()
    result = await sync(cfg)
    assert [w[0] for w in spy.writes()] == ["PATCH", "PUT"]
    assert zoom.find(b["userPrincipalName"])["active"] is True
    assert zoom.find(b["userPrincipalName"])[DEPARTMENT.rsplit(":", 1)[0]]["department"] == "Back"
    assert len(spy.writes()) == 2  # c and everyone else: nothing sent


async def test_zoom_1_the_strict_simulator_refuses_a_patch_of_anything_but_active(
    servers, tenant, zoom, tmp_path
):
    await sync(zoom_config(servers, tmp_path))
    uid = zoom.find(enabled(tenant)[0]["userPrincipalName"])["id"]
    headers = {"Authorization": f"Bearer {SCIM_TOKEN}", "Accept": "application/scim+json"}
    ops = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}
    url = f"{servers.scim_url}/Users/{quote(uid, safe='')}"
    async with httpx.AsyncClient(trust_env=False, headers=headers) as http:
        bad = await http.patch(
            url,
            json={**ops, "Operations": [{"op": "replace", "path": "displayName", "value": "X"}]},
        )
        good = await http.patch(
            url, json={**ops, "Operations": [{"op": "replace", "path": "active", "value": False}]}
        )
    assert bad.status_code == 400 and "active" in bad.json()["detail"]
    assert good.status_code == 200 and zoom.get(uid)["active"] is False


async def test_rfc_profile_still_patches_every_change(servers, tenant, zoom, tmp_path):
    """The default profile is unchanged: against the strict Zoom simulator its PATCH of a
    department is refused, which is why Zoom needs its profile."""
    zoom.zoom = None  # an RFC-shaped service for the first sync
    cfg = make_config(servers, tmp_path / "s.db")
    await sync(cfg)
    spy = Spy()
    zoom.faults = spy
    tenant.update_user(enabled(tenant)[0]["id"], department="Research")
    result = await sync(cfg)
    assert result.counts["updated"] == 1
    assert [w[0] for w in spy.writes()] == ["PATCH"]


# -- 3. pending invitations -------------------------------------------------------------------


async def test_zoom_3_pending_invitation_is_skipped_looked_at_again_never_posted_blindly(
    servers, tenant, zoom, tmp_path
):
    users = enabled(tenant)
    held = users[5]
    name = held["userPrincipalName"]
    zoom.add_pending_user(name)
    cfg = zoom_config(servers, tmp_path)
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and result.counts["created"] == len(users) - 1
    entry = await _log_entry(cfg, held["id"])
    assert entry["status"] == "skipped"
    assert "PendingInvitation" in entry["reason"] and name in entry["reason"]
    assert "not exist or not belong to this account" in entry["reason"]  # Zoom's own words
    assert "accept the invitation, or delete it" in entry["reason"]  # what to do
    assert zoom.posts_by_username[name.lower()] == 1  # the first POST met the invitation

    # the next (incremental) cycle looks again although Graph reports no change, by a
    # lookup first: no second POST
    spy = Spy()
    zoom.faults = spy
    result = await sync(cfg)
    assert result.counts["skipped"] == 1 and result.counts["failed"] == 0
    assert [(m, p.endswith("/Users")) for m, p, _, _ in spy.seen] == [("GET", True)]
    assert zoom.posts_by_username[name.lower()] == 1
    assert "PendingInvitation" in (await _log_entry(cfg, held["id"]))["reason"]

    # the user accepts: the next cycle links the account (and sets what differs)
    zoom.accept_invitation(
        name, displayName=held["displayName"], name={"givenName": "Some", "familyName": "Else"}
    )
    spy.seen.clear()
    result = await sync(cfg)
    assert result.counts["updated"] == 1
    assert zoom.posts_by_username[name.lower()] == 1
    assert zoom.find(name)["name"]["familyName"] == held["surname"]
    spy.seen.clear()
    result = await sync(cfg)
    assert spy.seen == []  # linked and unchanged: no lookup any more


async def test_zoom_3_a_deleted_invitation_lets_the_user_be_created(
    servers, tenant, zoom, tmp_path
):
    held = enabled(tenant)[7]
    name = held["userPrincipalName"]
    zoom.add_pending_user(name)
    cfg = zoom_config(servers, tmp_path)
    await sync(cfg)
    zoom.delete_invitation(name)
    result = await sync(cfg)
    assert result.counts["created"] == 1
    assert zoom.find(name) is not None and zoom.posts_by_username[name.lower()] == 2


async def test_zoom_3_pending_invitations_never_count_toward_quarantine(
    servers, tenant, zoom, tmp_path
):
    """Every fifth user held by an invitation: far past the breaker's floor, no quarantine."""
    users = enabled(tenant)
    for user in users[::5]:
        zoom.add_pending_user(user["userPrincipalName"])
    cfg = zoom_config(servers, tmp_path, quarantine__floor=3, quarantine__min_failures=3)
    result = await sync(cfg)
    assert result.status == "completed" and result.counts["failed"] == 0
    from bulkprov.checkpoint.store import StateStore

    async with await StateStore.open(cfg.state.path) as store:
        waiting = await store.waiting("pending")
        entries = await store.log_entries(status="skipped", limit=None)
    assert {w.user_name for w in waiting.values()} == {u["userPrincipalName"] for u in users[::5]}
    assert sum("PendingInvitation" in (e["reason"] or "") for e in entries) == len(users[::5])


async def test_zoom_3_test_connection_passes_against_a_zoom_with_pending_users(
    servers, zoom, tmp_path
):
    """Zoom answers its pending-user 400 for userNames it holds no account for (devforum
    7646): under the Zoom profile the probe counts that as a working endpoint."""
    from bulkprov.pipeline import check_connection
    from bulkprov.sim.faults import FaultPlan

    zoom.add_pending_user("invited@corp.example")
    zoom.faults = FaultPlan(rate=1.0, kinds=("pending",), seed=1)
    steps = await check_connection(zoom_config(servers, tmp_path), SECRETS)
    assert [s.ok for s in steps] == [True, True, True], steps
    assert "pending" in steps[-1].detail.lower()


async def test_zoom_3_provision_on_demand_names_the_pending_invitation(
    servers, tenant, zoom, tmp_path
):
    from bulkprov.pipeline import provision_user

    held = enabled(tenant)[9]
    zoom.add_pending_user(held["userPrincipalName"])
    steps = await provision_user(zoom_config(servers, tmp_path), SECRETS, held["id"])
    assert steps[-1].title.startswith("Match user") and not steps[-1].ok
    assert "PendingInvitation" in steps[-1].detail
    assert zoom.posts == 0


# -- 2. writes Zoom may ignore ---------------------------------------------------------------


def _requests(spy: Spy) -> list[str]:
    return [f"{m} {'one' if '/Users/' in p else 'list'}" for m, p, _, _ in spy.seen]


async def test_zoom_2_an_ignored_write_is_read_back_once_and_becomes_a_warning(
    servers, tenant, zoom, tmp_path
):
    cfg = zoom_config(servers, tmp_path)
    await sync(cfg)
    user = enabled(tenant)[0]
    stored = zoom.find(user["userPrincipalName"])
    tenant.update_user(user["id"], displayName="Renamed Person", department="Moved")
    spy = Spy()
    zoom.faults = spy
    result = await sync(cfg)
    assert result.counts["warning"] == 1 and result.counts["failed"] == 0
    assert _requests(spy) == ["PUT one", "GET one"]  # one write, one read back, no loop
    entry = await _log_entry(cfg, user["id"])
    assert entry["status"] == "warning"
    assert (
        f"displayName: Zoom kept {stored['displayName']!r} instead of 'Renamed Person'"
        in (entry["reason"])
    )
    assert "does not change displayName by SCIM" in entry["reason"]
    # what did change is applied and recorded; what did not is not recorded as done
    assert zoom.find(user["userPrincipalName"])[DEPARTMENT.rsplit(":", 1)[0]] == {
        "department": "Moved"
    }
    assert "displayName" not in orjson.loads(entry["modified"])
    # the next cycle sends nothing for it (the user did not change in Graph again)
    spy.seen.clear()
    result = await sync(cfg)
    assert spy.seen == [] and result.counts["warning"] == 0


async def test_zoom_2_a_write_zoom_applies_is_read_back_and_recorded_as_success(
    servers, tenant, zoom, tmp_path
):
    cfg = zoom_config(servers, tmp_path)
    await sync(cfg)
    user = next(u for u in enabled(tenant) if u.get("mail"))
    new_mail = "new.address@example.com"
    tenant.update_user(user["id"], mail=new_mail)
    spy = Spy()
    zoom.faults = spy
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["warning"] == 0
    assert _requests(spy) == ["PUT one", "GET one"]
    assert zoom.find(user["userPrincipalName"])["emails"][0]["value"] == new_mail
    # a change of no attribute Zoom may ignore is not read back
    tenant.update_user(user["id"], department="Only This")
    spy.seen.clear()
    await sync(cfg)
    assert _requests(spy) == ["PUT one"]


@pytest.mark.parametrize("foreign", ["ignore", "refuse"])
async def test_zoom_2_an_email_outside_the_managed_domains(
    servers, tenant, zoom, rules, tmp_path, foreign
):
    """Zoom ignores it, or refuses the PUT ("Domain name doesn't match…"): the other
    changes are applied either way, and the email is a Warning with the reason."""
    cfg = zoom_config(servers, tmp_path)
    await sync(cfg)
    user = next(u for u in enabled(tenant) if u.get("mail"))
    old_mail = zoom.find(user["userPrincipalName"])["emails"][0]["value"]
    rules.managed_domains = frozenset({"corp.example", "eu.corp.example", "example.com"})
    rules.foreign_email = foreign
    tenant.update_user(user["id"], mail="someone@personal.example", surname="Changed")
    result = await sync(cfg)
    assert result.counts["warning"] == 1 and result.counts["failed"] == 0
    stored = zoom.find(user["userPrincipalName"])
    assert stored["name"]["familyName"] == "Changed"
    assert stored["emails"][0]["value"] == old_mail
    reason = (await _log_entry(cfg, user["id"]))["reason"]
    assert f"Zoom kept {old_mail!r} instead of 'someone@personal.example'" in reason
    assert "managed (associated) domains" in reason
    if foreign == "refuse":
        assert "Domain name doesn't match" in reason  # Zoom's own words


async def test_zoom_2_a_user_name_change_is_kept_and_the_link_holds(
    servers, tenant, zoom, tmp_path
):
    cfg = zoom_config(servers, tmp_path)
    await sync(cfg)
    user = enabled(tenant)[1]
    old = user["userPrincipalName"]
    tenant.update_user(user["id"], userPrincipalName="renamed.person@corp.example")
    result = await sync(cfg)
    assert result.counts["warning"] == 1
    assert zoom.find(old) is not None and zoom.find("renamed.person@corp.example") is None
    reason = (await _log_entry(cfg, user["id"]))["reason"]
    assert f"userName: Zoom kept {old!r}" in reason and "sign-in email" in reason
    tenant.update_user(user["id"], department="Later")
    spy = Spy()
    zoom.faults = spy
    await sync(cfg)  # the account is still the one linked: updated by its id
    assert [m for m, _, _ in spy.writes()] == ["PUT"]


# -- 6. rate limits by label, the daily limit ------------------------------------------------


def test_zoom_6_the_profile_defaults_to_business_plus_limits(tmp_path):
    from bulkprov.config import parse_config

    cfg = parse_config(
        {
            "graph": {"tenant_id": "t", "client_id": "c"},
            "target": {"base_url": "https://api.zoom.us/scim2", "profile": "zoom"},
            "mappings": [{"target": "userName", "source": "mail", "matching_precedence": 1}],
        }
    )
    zoom = cfg.target.zoom
    assert (zoom.light_per_second, zoom.medium_per_second, zoom.post_label) == (80, 60, "medium")
    assert cfg.target.profile == "zoom"
    with pytest.raises(Exception, match="light_per_second and medium_per_second"):
        parse_config(
            {
                "graph": {"tenant_id": "t", "client_id": "c"},
                "target": {"base_url": "https://x.example", "profile": "zoom", "rate_limit": 5},
                "mappings": [{"target": "userName", "source": "mail", "matching_precedence": 1}],
            }
        )


def test_zoom_clear_on_null_is_refused_with_the_zoom_profile():
    """Zoom documents updates as a PUT of the fields that change and no way to clear one:
    ``target.clear_on_null`` (issue 20 item 4) is refused under the Zoom profile, never
    silently not done; the RFC profile takes it."""
    from bulkprov.config import parse_config

    def config(**target: object) -> object:
        return parse_config(
            {
                "graph": {"tenant_id": "t", "client_id": "c"},
                "target": {"base_url": "https://api.zoom.us/scim2", **target},
                "mappings": [{"target": "userName", "source": "mail", "matching_precedence": 1}],
            }
        )

    with pytest.raises(Exception, match='clear_on_null is not available with profile = "zoom"'):
        config(profile="zoom", clear_on_null=True)
    config(profile="zoom", clear_on_null=False)
    config(clear_on_null=True)


async def test_zoom_6_each_label_is_paced_on_its_own_bucket(servers, tenant, zoom, rules, tmp_path):
    """Zoom's buckets at Light 40/s and Medium 20/s, bulkprov's limits the same: no 429,
    creates (Medium) at 20/s while the lookups and updates (Light) go at their own rate."""
    from bulkprov.pipeline import RunStats

    rules.set_limits(light=40, medium=20)
    cfg = zoom_config(servers, tmp_path, zoom={"light_per_second": 40, "medium_per_second": 20})
    users = enabled(tenant)[:30]
    for user in enabled(tenant)[30:]:
        tenant.update_user(user["id"], accountEnabled=False)
    started = anyio.current_time()
    stats = RunStats()
    result = await sync(cfg, stats=stats)
    elapsed = anyio.current_time() - started
    assert result.counts["created"] == len(users)
    assert rules.throttled_by_label == {}
    # 1 list + 30 POSTs on Medium: the bucket's first second (20) is free, the rest at 20/s
    assert rules.by_label["medium"] == 31 and elapsed >= (31 - 20) / 20 * 0.9
    assert stats.scim is not None and stats.scim.stats.by_label == {"medium": 31}
    assert set(stats.scim.pacers) == {"light", "medium"}


async def test_zoom_6_a_429_without_retry_after_slows_only_its_label(
    servers, tenant, zoom, rules, tmp_path
):
    """Zoom's Medium bucket is smaller than configured (another app uses the account): its
    429s (no Retry-After, as Zoom documents none) cut the Medium pacer only; nobody fails."""
    from bulkprov.pipeline import RunStats

    rules.set_limits(light=None, medium=50)
    cfg = zoom_config(servers, tmp_path, zoom={"light_per_second": 80, "medium_per_second": 200})
    stats = RunStats()
    result = await sync(cfg, stats=stats)
    assert result.counts["created"] == len(enabled(tenant)) and result.counts["failed"] == 0
    assert rules.throttled_by_label.get("medium", 0) > 0
    assert stats.scim is not None
    pacers = stats.scim.pacers
    assert pacers["medium"].cuts > 0 and pacers["light"].cuts == 0
    assert pacers["light"].rate == 80


async def test_zoom_6_the_daily_limit_stops_the_run_cleanly_and_it_resumes(
    servers, tenant, zoom, rules, tmp_path
):
    from bulkprov.checkpoint.store import StateStore
    from bulkprov.errors import TargetDailyLimit

    rules.daily_limit = 40
    cfg = zoom_config(servers, tmp_path, target__concurrency=2)
    with pytest.raises(BaseException) as caught:
        await sync(cfg)
    exc = caught.value
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, TargetDailyLimit) and exc.exit_code == 12
    text = str(exc)
    assert "daily rate limit" in text and "GMT 00:00:00" in text  # Zoom's words
    assert " 00:00 GMT (in " in text and "run the same command again" in text
    # stopped at the first 429s (one per request in flight), not retried all day
    assert rules.daily_used == 40 and zoom.statuses[429] <= 2
    async with await StateStore.open(cfg.state.path) as store:
        run = await store.last_run()
        assert run is not None and run.status == "running"  # resumable
        assert await store.escrow_entries() == {}  # nobody failed for it
    rules.daily_limit = None  # the next day
    result = await sync(cfg)
    assert result.resumed and result.counts["failed"] == 0
    assert zoom.duplicate_posts() == {}
    assert len(zoom) == len(enabled(tenant))


async def test_zoom_6_watch_waits_for_the_daily_reset_then_resumes(
    servers, tenant, zoom, rules, tmp_path
):
    from datetime import UTC, datetime

    from bulkprov.commands.sync_watch import watch
    from bulkprov.errors import TargetDailyLimit

    rules.daily_limit = 30
    reset = time.time() + 1.0
    rules.daily_retry_after = datetime.fromtimestamp(reset, UTC).isoformat()
    cfg = zoom_config(servers, tmp_path, target__concurrency=2)
    errors: list[Exception] = []
    results: list[Any] = []

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        rules.daily_limit = None  # the day turns while the loop waits

    with anyio.fail_after(30):
        await watch(
            cfg,
            SECRETS,
            0.05,
            on_result=results.append,
            on_error=on_error,
            cycles=2,
            policy=FAST_RETRY,
        )
    assert len(errors) == 1 and isinstance(errors[0], TargetDailyLimit)
    assert errors[0].resume_at == pytest.approx(reset, abs=1e-3)
    assert time.time() >= reset  # waited for the reset, not retried all day
    assert len(results) == 1 and results[0].resumed and results[0].counts["failed"] == 0
    assert len(zoom) == len(enabled(tenant)) and zoom.duplicate_posts() == {}


async def test_zoom_6_test_connection_names_the_daily_limit(servers, zoom, rules, tmp_path):
    from bulkprov.pipeline import check_connection

    rules.daily_limit = 0
    steps = await check_connection(zoom_config(servers, tmp_path), SECRETS)
    assert not steps[-1].ok
    assert "daily request limit is spent" in steps[-1].detail
    assert "token" not in steps[-1].detail.split("(")[0]


def test_zoom_6_the_daily_limit_has_its_documented_exit_code():
    from bulkprov.commands._shared import EPILOG
    from bulkprov.errors import TargetAuthError, TargetDailyLimit, TargetStop

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert TargetDailyLimit.exit_code == 12
    assert "| 12 | the SCIM target's daily request limit is spent" in readme
    assert "12 the target's daily request limit is spent" in " ".join(EPILOG.split())
    # it stops the run as every TargetStop does; it is not a refused token (no token refresh)
    assert issubclass(TargetDailyLimit, TargetStop)
    assert not issubclass(TargetDailyLimit, TargetAuthError)


# -- 7. licences --------------------------------------------------------------------------


def assigned(servers: SimServers, tenant: GraphTenant, tmp_path: Path, **kw: Any) -> Config:
    return zoom_config(
        servers,
        tmp_path,
        scope__mode="assigned",
        scope__service_principal_id=tenant.directory.service_principal_id,
        **kw,
    )


async def test_zoom_7_user_type_from_the_app_role_pre_2020_names_renamed_with_a_warning(
    servers, tenant, zoom, tmp_path
):
    d = tenant.directory
    roles = {
        v: d.add_app_role(v, "On Prem" if v == "On-Prem" else v)["id"]
        for v in ("Basic", "Licensed", "On-Prem", "Pro", "Corp", "Collaboration")
    }
    users = enabled(tenant)[:6]
    for user, role in zip(users, roles, strict=True):
        d.assign(user["id"], roles[role])
    cfg = assigned(servers, tenant, tmp_path)
    assert any(m.target == "userType" for m in cfg.mappings)  # the default table maps it
    result = await sync(cfg)
    assert result.counts["created"] == 3 and result.counts["warning"] == 2
    assert result.counts["failed"] == 1
    types = {
        u["userPrincipalName"]: (zoom.find(u["userPrincipalName"]) or {}).get("userType")
        for u in users
    }
    assert list(types.values()) == ["Basic", "Licensed", "On-Prem", "Licensed", "On-Prem", None]
    pro = await _log_entry(cfg, users[3]["id"])
    assert pro["status"] == "warning" and "'Pro' is Zoom's pre-2020 name" in pro["reason"]
    refused = await _log_entry(cfg, users[5]["id"])
    assert refused["status"] == "failure"
    assert "AttributeValidationFailed: userType 'Collaboration' is not valid" in refused["reason"]
    assert "Basic, Licensed or On-Prem" in refused["reason"]  # bulkprov's advice

    # a role change is a PUT of userType; Pro again renamed, with its warning
    d.unassign(users[0]["id"])
    d.assign(users[0]["id"], roles["Pro"])
    result = await sync(cfg)
    assert zoom.find(users[0]["userPrincipalName"])["userType"] == "Licensed"
    assert (await _log_entry(cfg, users[0]["id"]))["status"] == "warning"


async def test_zoom_7_zoom_extension_attributes_are_mappable(servers, tenant, zoom, tmp_path):
    from bulkprov.mapping.defaults import DEFAULT_ZOOM_MAPPINGS

    extra = [
        {
            "target": "urn:us:zoom:scim:schemas:extension:1.0:ZoomUser:loginType.sso",
            "constant": "True",
        },
        {
            "target": "urn:ietf:params:scim:schemas:extension:zoom:1.0:User:zoomWhiteboard",
            "expression": 'IIF([department]="Sales", "true", "false")',
        },
    ]
    mappings = [m.model_dump(exclude_none=True) for m in DEFAULT_ZOOM_MAPPINGS] + extra
    cfg = zoom_config(servers, tmp_path, mappings=[_row(m) for m in mappings])
    result = await sync(cfg)
    assert result.counts["failed"] == 0
    user = enabled(tenant)[0]
    stored = zoom.find(user["userPrincipalName"])
    assert stored["urn:us:zoom:scim:schemas:extension:1.0:ZoomUser"] == {"loginType": {"sso": True}}
    licence = stored["urn:ietf:params:scim:schemas:extension:zoom:1.0:User"]["zoomWhiteboard"]
    assert licence == ("true" if user["department"] == "Sales" else "false")
    assert "urn:ietf:params:scim:schemas:extension:zoom:1.0:User" in stored["schemas"]
    # a change of a licence attribute is a PUT naming that extension
    tenant.update_user(user["id"], department="Sales" if licence == "false" else "Support")
    spy = Spy()
    zoom.faults = spy
    await sync(cfg)
    (put,) = [b for m, _, b in spy.writes() if m == "PUT"]
    assert "urn:ietf:params:scim:schemas:extension:zoom:1.0:User" in put["schemas"]


# -- 8. the seat guard -----------------------------------------------------------------------


def _licensed(tenant: GraphTenant, n: int, role: str = "Licensed") -> list[dict[str, Any]]:
    d = tenant.directory
    role_id = d.add_app_role(role)["id"]
    users = enabled(tenant)[:n]
    for user in users:
        d.assign(user["id"], role_id)
    return users


async def test_zoom_8_seat_guard_holds_what_does_not_fit_and_provisions_it_later(
    servers, tenant, zoom, tmp_path
):
    from bulkprov.checkpoint.store import StateStore
    from bulkprov.observe.metrics import render as metrics
    from bulkprov.observe.report import load_report_data, render_html
    from bulkprov.pipeline import RunStats

    users = _licensed(tenant, 10)
    cfg = assigned(servers, tenant, tmp_path, zoom={"licensed_seats": 6})
    stats = RunStats()
    result = await sync(cfg, stats=stats)
    assert result.counts["created"] == 6 and result.counts["staged"] == 4
    assert result.counts["failed"] == 0
    assert sum(1 for u in users if zoom.find(u["userPrincipalName"])) == 6
    held = [u for u in users if zoom.find(u["userPrincipalName"]) is None]
    entry = await _log_entry(cfg, held[0]["id"])
    assert entry["status"] == "skipped" and "LicenseLimitExceeded" in entry["reason"]
    assert "no Licensed seat left (6 of 6 used" in entry["reason"]
    assert "all 6 Licensed seats are used" in (result.message or "")  # the run warns
    assert stats.seat_figures is not None
    assert stats.seat_figures()["Licensed"] == {"used": 6, "left": 0, "cap": 6, "held": 4}
    text = metrics(stats, 0.0)
    assert 'bulkprov_zoom_seats_used{pool="Licensed"} 6' in text
    assert 'bulkprov_zoom_seats_left{pool="Licensed"} 0' in text
    async with await StateStore.open(cfg.state.path) as store:
        assert {w.kind for w in (await store.waiting()).values()} == {"license"}
    report = render_html(await load_report_data(cfg, None))
    assert 'data-figure="seats.Licensed.used">6<' in report
    assert 'data-figure="seats.Licensed.held">4<' in report

    # seats bought: the next (incremental) cycle provisions the held users
    cfg = assigned(servers, tenant, tmp_path, zoom={"licensed_seats": 11})
    result = await sync(cfg)
    assert result.counts["created"] == 4 and result.counts["staged"] == 0
    assert all(zoom.find(u["userPrincipalName"]) for u in users)
    assert "Licensed seats: 10 of 11 used (91%), 1 left" in (result.message or "")  # 90 %
    async with await StateStore.open(cfg.state.path) as store:
        assert await store.waiting() == {}


async def test_zoom_8_the_basic_cap(servers, tenant, zoom, tmp_path):
    users = _licensed(tenant, 5, "Basic")
    cfg = assigned(servers, tenant, tmp_path, zoom={"basic_cap": 3})
    result = await sync(cfg)
    assert result.counts["created"] == 3 and result.counts["staged"] == 2
    held = [u for u in users if zoom.find(u["userPrincipalName"]) is None]
    assert (
        "no Basic seat left (3 of 3 used; [target.zoom] basic_cap)"
        in (await _log_entry(cfg, held[0]["id"]))["reason"]
    )


async def test_zoom_8_zoom_answering_no_licence_is_held_the_same_way(
    servers, tenant, zoom, rules, tmp_path
):
    """No guard configured, and Zoom has 4 Licensed seats: Zoom's refusals hold the rest
    (staged, LicenseLimitExceeded with Zoom's words), no failure, no quarantine."""
    users = _licensed(tenant, 9)
    rules.licensed_seats = 4
    cfg = assigned(servers, tenant, tmp_path, quarantine__floor=2, quarantine__min_failures=2)
    result = await sync(cfg)
    assert result.status == "completed"
    assert result.counts["created"] == 4 and result.counts["staged"] == 5
    assert result.counts["failed"] == 0
    held = [u for u in users if zoom.find(u["userPrincipalName"]) is None]
    reason = (await _log_entry(cfg, held[0]["id"]))["reason"]
    assert "LicenseLimitExceeded" in reason and "No available licenses" in reason


async def test_zoom_8_a_plan_shows_the_hold(servers, tenant, zoom, tmp_path):
    from bulkprov.pipeline import make_plan

    _licensed(tenant, 5)
    cfg = assigned(servers, tenant, tmp_path, zoom={"licensed_seats": 2})
    plan = await make_plan(cfg, SECRETS, policy=FAST_RETRY)
    held = [op for op in plan["operations"] if "LicenseLimitExceeded" in (op["reason"] or "")]
    assert plan["counts"]["create"] == 2 and len(held) == 3
    assert zoom.posts == 0


# -- 9. group member PATCH bodies ---------------------------------------------------------------


async def test_zoom_9_group_member_patches_stay_under_the_size_limit(
    servers, tenant, zoom, rules, tmp_path
):
    """Zoom's 100,000 characters, scaled down: 2,000 characters and 1,000 members per chunk
    by count; every PATCH fits (no 400, no halving), every member lands."""
    users = enabled(tenant)
    group = tenant.directory.add_group("Everyone", [u["id"] for u in users])
    rules.max_group_patch = 2_000
    cfg = zoom_config(
        servers, tmp_path, zoom={"group_patch_chars": 2_000}, groups__member_chunk=1000
    )
    result = await sync(cfg)
    assert result.counts["failed"] == 0
    found = zoom.groups.find("Everyone")
    assert found is not None and len(zoom.groups.member_ids(found["id"])) == len(users)
    assert len(rules.group_patch_sizes) >= 2 and max(rules.group_patch_sizes) <= 2_000
    assert 400 not in zoom.statuses
    # removals are chunked the same way
    for user in users[: len(users) // 2]:
        tenant.directory.remove_member(group["id"], user["id"])
    rules.group_patch_sizes.clear()
    result = await sync(cfg)
    assert result.counts["failed"] == 0 and 400 not in zoom.statuses
    assert len(zoom.groups.member_ids(found["id"])) == len(users) - len(users) // 2
    assert rules.group_patch_sizes and max(rules.group_patch_sizes) <= 2_000


def _row(m: dict[str, Any]) -> Any:
    from bulkprov.config import AttributeMapping

    return AttributeMapping.model_validate(m)


async def _log_entry(cfg: Config, graph_id: str) -> dict[str, Any]:
    from bulkprov.checkpoint.store import StateStore

    async with await StateStore.open(cfg.state.path) as store:
        entries = await store.log_entries(user=graph_id, limit=None)
    return entries[-1]


# -- 10. bulkprov duplicates ------------------------------------------------------------------


def test_zoom_10_duplicates_report(tmp_path):
    """The guide's "Duplicate users in Zoom" on the strict simulator, through the CLI: text,
    CSV and JSON; read-only (no SCIM write, the state unchanged)."""
    import csv
    import io

    from click.testing import CliRunner

    from bulkprov.cli import main
    from bulkprov.commands.demo import write_demo_config

    from .cli_support import SimThread

    tenant = GraphTenant(user_count=120, seed=3, client_secret=GRAPH_SECRET)
    zoom = ScimService(SCIM_TOKEN, id_seed=5, zoom=ZoomRules())
    users = enabled(tenant)
    other_mail = next(
        u for u in users if u.get("mail") and u["mail"].lower() != u["userPrincipalName"].lower()
    )
    pending = users[11]
    env = {"BULKPROV_GRAPH_SECRET": GRAPH_SECRET, "BULKPROV_SCIM_TOKEN": SCIM_TOKEN}
    with SimThread(tenant, zoom) as servers:
        config, state = tmp_path / "bulkprov.toml", tmp_path / "s.db"
        write_demo_config(config, servers.as_json(), state, 4, profile="zoom")
        zoom.add_pending_user(pending["userPrincipalName"])
        run = CliRunner().invoke(main, ["sync", "-c", str(config), "--quiet"], env=env)
        assert run.exit_code == 0, run.output
        # after the sync: an account under a user's mail (made by hand, say), one whose
        # userName differs only by case, and one nobody maps to
        mine = zoom.find(other_mail["userPrincipalName"])
        zoom.seed_user({"userName": other_mail["mail"], "active": True})
        zoom.seed_user({"userName": "ceo@elsewhere.example", "active": True})
        # (a user not synced yet whose account exists with another case)
        new = tenant.add_user(userPrincipalName="Late.Comer@corp.example", mail=None)
        zoom.seed_user({"userName": "late.comer@corp.example", "active": True})
        zoom.reset_counters()
        text = CliRunner().invoke(main, ["duplicates", "-c", str(config)], env=env)
        as_json = CliRunner().invoke(
            main, ["duplicates", "-c", str(config), "--format", "json"], env=env
        )
        as_csv = CliRunner().invoke(
            main,
            ["duplicates", "-c", str(config), "--format", "csv", "--out", str(tmp_path / "d.csv")],
            env=env,
        )
        assert zoom.counters()["by_method"].keys() == {"GET"}  # read-only
    assert text.exit_code == 0 and as_json.exit_code == 0 and as_csv.exit_code == 0
    rows = orjson.loads(as_json.output)
    kinds = {r["kind"]: r for r in rows}
    dup = kinds["email-not-upn"]
    assert other_mail["userPrincipalName"] in dup["user"] and other_mail["mail"] in dup["account"]
    assert "map userName from mail" in dup["action"]
    assert mine is not None  # its own account exists: the mail account is a duplicate
    assert any(r["kind"] == "case-only" and "Late.Comer@corp.example" in r["user"] for r in rows)
    assert new["id"] in str(rows)
    pend = kinds["pending-invitation"]
    assert (
        pending["userPrincipalName"] in pend["user"] and "accept the invitation" in pend["action"]
    )
    assert any(r["kind"] == "unmanaged" and "ceo@elsewhere.example" in r["account"] for r in rows)
    assert "what to do:" in text.output and "[email-not-upn]" in text.output
    # the tenant's names and emails: a private file, as every file bulkprov writes them to
    assert ((tmp_path / "d.csv").stat().st_mode & 0o777) == 0o600
    with (tmp_path / "d.csv").open(encoding="utf-8") as f:
        table = list(csv.DictReader(io.StringIO(f.read())))
    assert [r["kind"] for r in table] == [r["kind"] for r in rows]


def test_zoom_10_two_entra_users_mapping_to_one_user_name():
    from bulkprov.observe.duplicates import SourceUser, find_duplicates

    a = SourceUser("g1", "a@corp.example", "shared@corp.example", "shared@corp.example")
    b = SourceUser("g2", "b@corp.example", "shared@corp.example", "Shared@corp.example")
    rows = find_duplicates([a, b], [], {})
    (row,) = [r for r in rows if r.kind == "same-user-name"]
    assert "a@corp.example (g1)" in row.user and "b@corp.example (g2)" in row.user
    assert "DuplicateSourceEntries" in row.action


# -- bad input: every Zoom error answer ends in the user's log entry -------------------------


async def test_zoom_bad_answers_end_in_the_log_with_zoom_detail_and_advice(
    servers, tenant, zoom, tmp_path
):
    """400 with detail, 406, 409 with no account behind it, 429 without Retry-After until
    the budget is spent, and a 429 with Retry-After once: each user's entry has Zoom's own
    words and bulkprov's advice; nothing is lost, the next cycle provisions them all."""
    from bulkprov.retry import RetryPolicy
    from bulkprov.sim.faults import NoFaults

    users = enabled(tenant)
    a, b, c, d, e = (u["userPrincipalName"].lower() for u in users[:5])
    once: set[str] = set()

    class Answers(NoFaults):
        active = True

        async def before(self, req: SimRequest) -> SimResponse | None:
            if not self.active or req.method != "POST":
                return None
            name = str(orjson.loads(req.body).get("userName", "")).lower()

            def error(status: int, detail: str, **headers: str) -> SimResponse:
                body = {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                    "detail": detail,
                    "status": status,
                }
                return SimResponse(status, orjson.dumps(body), headers)

            if name == a:
                return error(400, "Invalid field: emails[0].value must be an email address.")
            if name == b:
                return error(406, "Not Acceptable.")
            if name == c:
                return error(409, "User already exists in another account.")
            if name == d:
                return error(429, "You have reached the maximum per-second rate limit.")
            if name == e and name not in once:
                once.add(name)
                return error(429, "Too many requests.", **{"Retry-After": "0.2"})
            return None

    answers = Answers()
    zoom.faults = answers
    # a fixed rate: one user's endless 429s must not slow the others (the AIMD pacer's own
    # reaction is tested above)
    cfg = zoom_config(servers, tmp_path, target__adaptive=False)
    policy = RetryPolicy(max_attempts=4, max_seconds=0.6, base=0.01, cap=0.05)
    result = await run_sync(cfg, SECRETS, policy=policy)
    assert result.status == "completed_with_failures" and result.counts["failed"] == 4
    reasons = {
        u["userPrincipalName"].lower(): (await _log_entry(cfg, u["id"]))["reason"]
        for u in users[:5]
    }
    assert "must be an email address" in reasons[a] and "Zoom refused the request" in reasons[a]
    assert "Not Acceptable" in reasons[b] and "Accept: application/scim+json" in reasons[b]
    assert "another account" in reasons[c] and "bulkprov duplicates" in reasons[c]
    assert "per-second rate limit" in reasons[d] and "light_per_second" in reasons[d]
    assert zoom.find(e) is not None  # one 429 with Retry-After: waited, then created
    answers.active = False
    from bulkprov.checkpoint.store import StateStore

    async with await StateStore.open(cfg.state.path) as store:
        await store.release_escrow()  # `bulkprov retry-failed`
    result = await run_sync(cfg, SECRETS, policy=policy)
    assert result.counts["created"] == 4 and result.counts["failed"] == 0
    assert len(zoom) == len(users) and zoom.duplicate_posts().keys() <= {d}


# -- the demo ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_zoom_demo_initial_sync_changes_and_an_incremental_cycle_checked_exactly(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "bulkprov", "demo", "--users", "2000", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    assert "demo PASSED" in out
    import re

    pending = re.search(r"pending invitations: (\d+) \(Skipped: (\d+), created: 0\)", out)
    assert pending and int(pending[1]) > 10 and pending[1] == pending[2]
    assert "values Zoom kept, each a Warning with its reason: 10" in out
    assert (
        "missing: 0   duplicates: 0   extra: 0   wrong attributes: 0   quarantined runs: 0" in out
    )
    assert "requests per user: initial sync 0.9" in out
    # 100 PUTs, their 100 read-backs, 30 PATCHes, and one lookup per pending invitation
    assert (
        f"({230 + int(pending[1])} for 130: GET {100 + int(pending[1])}, PATCH 30, PUT 100)" in out
    )


def test_sim_config_out_with_zoom_writes_the_zoom_profile(tmp_path):
    """`bulkprov sim --zoom --config-out FILE`: the config has the Zoom profile, paced at the
    strict simulator's own label limits (main's sim_parser carries the --zoom options)."""
    from bulkprov.commands.sim import sim_parser, write_sim_config
    from bulkprov.config import load_config

    args = sim_parser().parse_args(
        ["--zoom", "--zoom-light", "40", "--zoom-medium", "30", "--zoom-post-label", "light"]
    )
    info = {
        "tenant_id": "t",
        "client_id": "c",
        "authority_url": "http://127.0.0.1:1",
        "graph_api_url": "http://127.0.0.1:1/v1.0",
        "scim_url": "http://127.0.0.1:2/scim2",
    }
    path = tmp_path / "sim.toml"
    write_sim_config(path, info, args)
    target = load_config(path).target
    assert target.zoom_profile
    assert (target.zoom.light_per_second, target.zoom.medium_per_second) == (40, 30)
    assert target.zoom.post_label == "light"
    rfc = tmp_path / "rfc.toml"
    write_sim_config(rfc, info, sim_parser().parse_args([]))
    assert load_config(rfc).target.profile == "rfc"
