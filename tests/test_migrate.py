"""``bulkprov migrate``: the cut-over from Entra's provisioning job, end to end on the
simulators (a tenant with a running Zoom job, a Zoom as that job left it), and every way
it refuses, each with nothing written, paused or sent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bulkprov import _json
from bulkprov.cli import main
from bulkprov.config import load_config
from bulkprov.mapping import MappingContext, compile_mappings
from bulkprov.mapping.exchange import from_graph
from bulkprov.scim.paths import get_value
from bulkprov.sim import GraphTenant, ScimService
from bulkprov.sim.cutover import Cutover, seed_cutover
from bulkprov.sim.graph.synchronization import attribute_mapping, zoom_job_schema
from bulkprov.sim.server import SimServers

from .cli_support import SimThread
from .conftest import GRAPH_SECRET, SCIM_TOKEN
from .test_scim2_server import scim2_server  # noqa: F401 - the fixture, used by name

ENV = {"BULKPROV_GRAPH_SECRET": GRAPH_SECRET, "BULKPROV_SCIM_TOKEN": SCIM_TOKEN}


@dataclass
class Site:
    """A tenant with Entra's Zoom job, its Zoom, and the command line pointed at them."""

    tenant: GraphTenant
    scim: ScimService
    servers: SimServers
    cutover: Cutover
    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "bulkprov.toml"

    @property
    def sp(self) -> str:
        return self.cutover.service_principal_id

    def run(self, *args: str, env: dict[str, str] | None = None, connect: bool = True) -> Result:
        argv = ["migrate", "-c", str(self.config), "--service-principal", self.sp, *args]
        if connect and not self.config.exists():
            s = self.servers
            argv += ["--tenant-id", str(s.tenant_id), "--client-id", str(s.client_id)]
            argv += ["--authority", str(s.authority_url), "--graph-url", str(s.graph_api_url)]
        return CliRunner().invoke(main, argv, env=ENV if env is None else env)

    def files(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir())

    def writes(self) -> dict[str, int]:
        by = self.scim.counters()["by_method"]
        return {m: by.get(m, 0) for m in ("POST", "PATCH", "PUT", "DELETE")}


def _site(tmp_path: Path, **seed: Any) -> Iterator[Site]:
    tenant = GraphTenant(user_count=200, seed=11, client_secret=GRAPH_SECRET)
    scim = ScimService(SCIM_TOKEN, id_seed=5)
    cutover = seed_cutover(tenant, scim, **seed)
    folder = tmp_path / "site"
    folder.mkdir()
    with SimThread(tenant, scim) as servers:
        if seed.get("secrets", True):
            tenant.synchronization.set_secrets(
                cutover.service_principal_id,
                sync_all=seed.get("sync_all", False),
                base_address=str(servers.scim_url),
            )
        scim.reset_counters()
        yield Site(tenant, scim, servers, cutover, folder)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from _site(tmp_path)


def _plan(site: Site) -> dict[str, Any]:
    plan: dict[str, Any] = _json.loads((site.folder / "cutover-plan.json").read_bytes())
    return plan


def test_the_cut_over_takes_over_entras_job_and_sends_only_the_drift(site: Site):
    """Entra left most users provisioned, some stale, a few failed and absent, a few
    accounts unmanaged: migrate writes the job's config, plans 0 creates for provisioned
    users and exactly the drift, and --pause-entra pauses the job and sends only that."""
    c = site.cutover
    assert c.provisioned and c.stale and c.failed and c.disabled and c.unmanaged

    first = site.run()
    assert first.exit_code == 0, first.output
    # the config: the job's mappings, scoping filters, scope mode, matching attribute
    cfg = load_config(site.config)
    job_table = from_graph(zoom_job_schema())
    assert list(cfg.mappings) == job_table.mappings
    assert list(cfg.scope.filters) == job_table.filters
    assert (cfg.scope.mode, cfg.scope.service_principal_id) == ("assigned", site.sp)
    assert [m.target for m in cfg.mappings if m.matching_precedence] == ["userName"]
    assert cfg.groups.enabled is False and cfg.target.base_url == site.servers.scim_url
    assert "FILL IN" in site.config.read_text() and "# matching:" in site.config.read_text()
    assert 'the "Delete" target object action' in site.config.read_text()
    assert site.writes() == {"POST": 0, "PATCH": 0, "PUT": 0, "DELETE": 0}
    assert not [call for call in site.tenant.synchronization.calls if call[0] == "POST"]

    # the plan: provisioned users matched (0 creates), exactly the drift
    plan = _plan(site)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for op in plan["operations"]:
        by_action.setdefault(op["action"], []).append(op)
    assert set(by_action) == {"link", "create"}
    created = {op["user_name"] for op in by_action["create"]}
    assert created == set(c.failed)
    drift = {op["user_name"]: op["changes"] for op in by_action["link"] if op["changes"]}
    assert drift == c.stale
    in_sync = {op["user_name"] for op in by_action["link"] if not op["changes"]}
    assert in_sync == set(c.provisioned)
    unmanaged = {(a["user_name"], a["active"]) for a in plan["unmanaged"]}
    assert unmanaged == {(n, True) for n in c.unmanaged} | {(n, False) for n in c.disabled}
    out = first.output
    assert f"matched, in sync: {len(c.provisioned)}" in out
    assert (
        f"matched, drifted: {len(c.stale)}" in out and f"absent:           {len(c.failed)}" in out
    )
    assert "safe to switch" in out and "NOT safe" not in out
    assert "scope: assigned users and groups" in out

    # the switch
    switch = site.run("--pause-entra", "--quiet")
    assert switch.exit_code == 0, switch.output
    assert site.tenant.synchronization.code(c.job_id) == "Paused"
    assert ("POST", c.job_id, "pause") in site.tenant.synchronization.calls
    assert site.writes() == {"POST": len(c.failed), "PATCH": len(c.stale), "PUT": 0, "DELETE": 0}
    assert not site.scim.counters()["duplicate_posts"]
    assert "to roll back to Entra" in switch.output and "--resume-entra" in switch.output
    assert f"/synchronization/jobs/{c.job_id}/start" in switch.output

    # every user in scope now has an account as the mapping makes it; nothing else changed
    mapper = compile_mappings(cfg.mappings)
    store = {r["userName"].lower(): r for r in site.scim.dump()}
    for upn in c.in_scope:
        user = site.tenant.get_user(upn)
        assert user is not None
        mapped = mapper.map_user(user, MappingContext(is_soft_deleted=False))
        res = store[upn.lower()]
        for path, value in mapped.values.items():
            assert get_value(res, path) == value, (upn, path)
    for name in c.unmanaged:
        assert store[name.lower()]["active"] is True
    for name in c.disabled:
        assert store[name.lower()]["active"] is False

    # the roll-back: Entra's job runs again, bulkprov's state is said
    back = site.run("--resume-entra")
    assert back.exit_code == 0, back.output
    assert site.tenant.synchronization.code(c.job_id) == "Active"
    assert f"holds {len(c.in_scope)} user(s)" in back.output

    # Entra's SCIM token (in the secrets migrate reads) and ours appear nowhere
    entra_token = next(
        s["value"]
        for s in site.tenant.synchronization.secrets[site.sp]
        if s["key"] == "SecretToken"
    )
    written = [p.read_bytes() for p in site.folder.rglob("*") if p.is_file()]
    for secret in (entra_token, SCIM_TOKEN, GRAPH_SECRET):
        assert all(secret not in r.output for r in (first, switch, back))
        assert all(secret.encode() not in blob for blob in written)


def test_without_the_scim_token_the_config_is_written_and_the_plan_waits_for_it(site: Site):
    """Entra never reveals its SCIM token: migrate writes the config, then says to set it."""
    result = site.run(env={"BULKPROV_GRAPH_SECRET": GRAPH_SECRET})
    assert result.exit_code == 2
    assert site.config.exists()
    assert "BULKPROV_SCIM_TOKEN is not set" in result.output
    assert "run `bulkprov migrate" in result.output
    assert site.scim.counters()["total"] == 0


def test_an_existing_config_is_used_and_its_differences_from_the_job_said(site: Site):
    """A config that exists is never rewritten: migrate uses it and says how it differs."""
    assert site.run().exit_code == 0
    text = site.config.read_text().replace(
        'source = "givenName"', 'expression = "PCase([givenName])"'
    )
    site.config.write_text(text)
    again = site.run()
    assert "is used as it is; it differs from Entra's job" in again.output
    assert "the mapping of 'name.givenName' differs from Entra's" in again.output
    assert site.config.read_text() == text
    other_app = text.replace(site.sp, "11111111-2222-4333-8444-555555555555")
    site.config.write_text(other_app)
    assert "not the service principal whose job this is" in site.run().output
    assert site.config.read_text() == other_app


def test_a_create_that_would_duplicate_an_account_is_not_safe_and_nothing_is_paused(site: Site):
    """A user renamed in Entra after provisioning: bulkprov's userName no longer matches,
    but the account has the user's email: the create would duplicate it."""
    tenant, c = site.tenant, site.cutover
    renamed = next(
        upn
        for upn in c.provisioned
        if (u := tenant.get_user(upn)) is not None and u["mail"] and u["mail"] != upn
    )
    user = tenant.get_user(renamed)
    assert user is not None
    tenant.update_user(user["id"], userPrincipalName="renamed." + renamed)
    result = site.run("--pause-entra")
    assert result.exit_code == 2, result.output
    assert "NOT safe to switch" in result.output
    assert f"looks like the account {renamed}" in result.output
    assert "nothing was paused or sent" in result.output
    assert tenant.synchronization.code(c.job_id) == "Active"
    assert site.writes() == {"POST": 0, "PATCH": 0, "PUT": 0, "DELETE": 0}


def test_the_first_sync_never_joins_a_running_entra_job_unless_forced(site: Site):
    """The pause is accepted but the job still runs: no first sync without --force, and
    the message says why; with --force it runs."""
    sync = site.tenant.synchronization
    sync.pause_pending = True
    assert site.run().exit_code == 0
    refused = site.run("--pause-entra", "--wait", "0")
    assert refused.exit_code == 2
    assert "still Active" in refused.output and "double the requests" in refused.output
    assert "--force" in refused.output
    assert site.writes() == {"POST": 0, "PATCH": 0, "PUT": 0, "DELETE": 0}
    forced = site.run("--pause-entra", "--wait", "0", "--force", "-q")
    assert forced.exit_code == 0, forced.output
    assert "--force: starting the first sync anyway" in forced.output
    c = site.cutover
    assert site.writes()["POST"] == len(c.failed) and site.writes()["PATCH"] == len(c.stale)


def test_no_provisioning_job_is_a_clear_error_and_writes_nothing(site: Site):
    site.tenant.synchronization.jobs.clear()
    result = site.run()
    assert result.exit_code == 2
    assert "has no provisioning job" in result.output
    assert site.files() == []


def test_a_quarantined_job_is_refused_and_writes_nothing_unless_accepted(site: Site):
    site.tenant.synchronization.quarantine(
        site.cutover.job_id, "EncounteredQuarantineException", "the SCIM token was refused"
    )
    result = site.run()
    assert result.exit_code == 2
    assert "is in quarantine" in result.output and "EncounteredQuarantineException" in result.output
    assert "--accept-quarantine" in result.output
    assert site.files() == []
    accepted = site.run("--accept-quarantine")
    assert accepted.exit_code == 0, accepted.output
    assert site.config.exists()


def test_a_missing_permission_names_it_and_writes_nothing(site: Site):
    site.tenant.synchronization.denied = {"read"}
    result = site.run()
    assert result.exit_code == 3
    assert "(403)" in result.output and "Synchronization.Read.All" in result.output
    assert "Application.ReadWrite.OwnedBy" in result.output
    assert site.files() == []


def test_a_missing_write_permission_stops_the_switch_before_anything_is_sent(site: Site):
    assert site.run().exit_code == 0
    site.tenant.synchronization.denied = {"write"}
    result = site.run("--pause-entra")
    assert result.exit_code == 3
    assert "POST" in result.output and "Synchronization.ReadWrite.All" in result.output
    assert site.writes() == {"POST": 0, "PATCH": 0, "PUT": 0, "DELETE": 0}


def test_a_schema_bulkprov_cannot_express_names_each_mapping_and_writes_nothing(site: Site):
    extra = [
        attribute_mapping(
            'roles[primary eq "True"].value',
            {"expression": "[x]", "name": "x", "parameters": [], "type": "Attribute"},
            flow_type="MultiValueAddOnly",
        ),
        attribute_mapping(
            "nickName",
            {
                "expression": "Soundex([givenName])",
                "name": "Soundex",
                "parameters": [],
                "type": "Function",
            },
        ),
    ]
    job = site.tenant.synchronization.jobs[site.sp][site.cutover.job_id]
    job["schema"] = zoom_job_schema(extra_mappings=extra)
    result = site.run()
    assert result.exit_code == 2
    assert "cannot be taken over as it is (nothing was written)" in result.output
    assert "2 attribute mappings cannot be expressed" in result.output
    assert 'roles[primary eq \\"True\\"].value' in result.output or "roles[primary" in result.output
    assert "MultiValueAddOnly" in result.output and "(nickName)" in result.output
    assert site.files() == []


def test_unreadable_settings_choose_the_assigned_scope_and_say_so(tmp_path: Path):
    for s in _site(tmp_path, secrets=False):
        result = s.run("--target-url", str(s.servers.scim_url))
        assert result.exit_code == 0, result.output
        text = s.config.read_text()
        assert "CHOICE: Entra's Scope setting could not be read" in text
        assert 'mode = "assigned"' in text and "FILL IN: Entra's accidental-deletion" in text
        assert "given with --target-url" in text
        assert "safe to switch" in result.output


@pytest.mark.slow
def test_demo_cutover_runs_end_to_end_and_checks_itself(tmp_path: Path):
    """`bulkprov demo --cutover`: a running Entra job, migrate, --pause-entra, the check."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "bulkprov", "demo", "--cutover", "--users", "1500"]
        + ["--workdir", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "safe to switch" in out and "paused Entra's job" in out
    assert "wrong or missing: 0   duplicates: 0   unmanaged changed: 0" in out
    assert "Entra's job: Paused" in out and "cut-over demo PASSED" in out


def test_the_guide_opens_with_the_cut_over_and_the_readme_mentions_it():
    """docs/zoom-from-entra.md's first section is the cut-over; README's "Using it against
    your tenant" points to it."""
    root = Path(__file__).resolve().parent.parent
    guide = (root / "docs" / "zoom-from-entra.md").read_text(encoding="utf-8")
    first = guide.split("\n## ", 2)[1]
    assert first.startswith(
        "Already provisioning Zoom with Entra? Cut over with `bulkprov migrate`"
    )
    assert "--pause-entra" in first and "--resume-entra" in first and "FILL IN" in first
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Using it against your tenant\n", 1)[1].split("\n## ", 1)[0]
    assert "bulkprov migrate --service-principal" in section and "--pause-entra" in section


@pytest.mark.slow
def test_the_cut_over_into_a_third_party_scim_server(
    tmp_path: Path,
    scim2_server: str,  # noqa: F811 - pytest passes the fixture imported above
):
    """The same cut-over into scim2-server (PyPI), filled as Entra's job would have left
    it: the plan matches the provisioned users, the switch sends only the drift."""
    import httpx

    from .test_scim2_server import list_all

    tenant = GraphTenant(user_count=120, seed=11, client_secret=GRAPH_SECRET)
    staging = ScimService(SCIM_TOKEN, id_seed=5)
    c = seed_cutover(tenant, staging)
    headers = {"Authorization": f"Bearer {SCIM_TOKEN}"}
    for res in staging.dump():
        body = {k: v for k, v in res.items() if k not in ("id", "meta")}
        answer = httpx.post(
            f"{scim2_server}/Users", json=body, headers=headers, trust_env=False, timeout=10
        )
        assert answer.status_code == 201, answer.text
    folder = tmp_path / "site"
    folder.mkdir()
    with SimThread(tenant, staging) as servers:
        tenant.synchronization.set_secrets(c.service_principal_id, sync_all=False)
        site = Site(tenant, staging, servers, c, folder)
        first = site.run("--target-url", scim2_server)
        assert first.exit_code == 0, first.output
        plan = _plan(site)
        creates = {op["user_name"] for op in plan["operations"] if op["action"] == "create"}
        drift = {
            op["user_name"]: op["changes"]
            for op in plan["operations"]
            if op["action"] == "link" and op["changes"]
        }
        assert creates == set(c.failed) and drift == c.stale
        switch = site.run("--pause-entra", "-q")
        assert switch.exit_code == 0, switch.output
        assert tenant.synchronization.code(c.job_id) == "Paused"
    cfg = load_config(site.config)
    mapper = compile_mappings(cfg.mappings)
    store = {r["userName"].lower(): r for r in list_all(scim2_server)}
    assert len(store) == len(c.in_scope) + len(c.disabled) + len(c.unmanaged)
    for upn in c.in_scope:
        user = tenant.get_user(upn)
        assert user is not None
        mapped = mapper.map_user(user, MappingContext(is_soft_deleted=False))
        for path, value in mapped.values.items():
            assert get_value(store[upn.lower()], path) == value, (upn, path)
