"""A tenant and a Zoom as Entra's provisioning job leaves them: the ground of ``bulkprov
migrate`` in tests and in ``bulkprov demo --cutover``.

:func:`seed_cutover` gives the simulated tenant an enterprise application for Zoom with a
running provisioning job (:func:`~bulkprov.sim.graph.synchronization.zoom_job_schema`:
the Zoom connector's mappings, a scoping filter, assigned users and groups), and fills the
simulated Zoom with what that job would have written, computed here by hand from the
connector's table (not with bulkprov's mapping compiler, so that a test compares two
independent readings of the same table):

* most users in scope have their account, exactly as the mapping makes it;
* some have an account with stale attributes (a department renamed since, a family name
  changed), which Entra has not written yet;
* a few are absent: Entra failed them (escrowed), so a cut-over must create them;
* users unassigned from the app have an account Entra disabled (``active = false``);
* a few accounts no Entra user maps to (conference rooms, a service account): nobody
  manages them, and a cut-over must leave them alone.

The selection is a function of each user's position, so the same arguments give the same
tenant, and :class:`Cutover` lists who is in which group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bulkprov.sim.graph.synchronization import ENTERPRISE, zoom_job_schema
from bulkprov.sim.graph.tenant import GraphTenant
from bulkprov.sim.scim.service import ScimService

__all__ = ["Cutover", "entra_resource", "seed_cutover"]

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
EXCLUDED_DEPARTMENT = "Human Resources"


@dataclass
class Cutover:
    """Who is where after :func:`seed_cutover` (userNames as the mapping makes them)."""

    service_principal_id: str
    job_id: str
    group_id: str
    #: in scope, with an account exactly as the mapping makes it
    provisioned: list[str] = field(default_factory=list)
    #: in scope, with an account whose values are stale: userName → {path: new value}
    stale: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: in scope, no account (Entra failed them)
    failed: list[str] = field(default_factory=list)
    #: out of scope (unassigned), account disabled by Entra
    disabled: list[str] = field(default_factory=list)
    #: accounts no Entra user maps to
    unmanaged: list[str] = field(default_factory=list)

    @property
    def in_scope(self) -> list[str]:
        return [*self.provisioned, *self.stale, *self.failed]


def entra_in_scope(user: dict[str, Any]) -> bool:
    """The Zoom job's scoping filter and Entra's rule for disabled users: ``department``
    NOT_EQUALS the excluded one (null fails, as every operator but IS NULL), enabled."""
    department = user.get("department")
    return (
        user.get("accountEnabled") is not False
        and isinstance(department, str)
        and bool(department)
        and department != EXCLUDED_DEPARTMENT
    )


def entra_resource(user: dict[str, Any], *, active: bool = True) -> dict[str, Any]:
    """The Zoom account Entra's job makes of ``user`` (null values are not sent)."""
    res: dict[str, Any] = {
        "schemas": [CORE_USER, ENTERPRISE],
        "userName": user["userPrincipalName"],
        "active": active,
    }
    if user.get("mail"):
        res["emails"] = [{"value": user["mail"], "type": "work", "primary": True}]
    name = {}
    if user.get("givenName"):
        name["givenName"] = user["givenName"]
    if user.get("surname"):
        name["familyName"] = user["surname"]
    if name:
        res["name"] = name
    if user.get("department"):
        res[ENTERPRISE] = {"department": user["department"]}
    return res


def seed_cutover(
    tenant: GraphTenant,
    scim: ScimService,
    *,
    stale_every: int = 17,
    failed_every: int = 29,
    unassigned_every: int = 10,
    unmanaged: int = 6,
    sync_all: bool = False,
    secrets: bool = True,
    base_address: str = "https://api.zoom.us/scim2",
    schema: dict[str, Any] | None = None,
) -> Cutover:
    """Give ``tenant`` a Zoom app with a running Entra job and fill ``scim`` as it left it.

    Users at position ``i`` with ``i % unassigned_every == unassigned_every - 1`` are not
    members of the assigned group "Zoom Users"; of the others, those in the job's scope get
    an account, stale when ``i % stale_every == 3``, none when ``i % failed_every == 5``.
    ``sync_all`` is the job's scope setting (``SyncAll``); ``secrets=False`` leaves the
    synchronization secrets unreadable (the beta read answers an empty list).
    """
    directory = tenant.directory
    sp = directory.service_principal_id
    users = list(tenant.iter_users())
    members = [u["id"] for i, u in enumerate(users) if i % unassigned_every != unassigned_every - 1]
    group = directory.add_group("Zoom Users", members)
    directory.assign(group["id"])
    out = Cutover(sp, "", group["id"])
    for i, user in enumerate(users):
        assigned = sync_all or i % unassigned_every != unassigned_every - 1
        upn = user["userPrincipalName"]
        if not (assigned and entra_in_scope(user)):
            if not assigned and user.get("accountEnabled") is not False and i % 3 == 0:
                scim.seed_user(entra_resource(user, active=False))  # Entra disabled it
                out.disabled.append(upn)
            continue
        if i % failed_every == 5:
            out.failed.append(upn)
            continue
        res = entra_resource(user)
        if i % stale_every == 3:
            now: dict[str, Any] = {f"{ENTERPRISE}:department": user["department"]}
            res[ENTERPRISE] = {"department": f"{user['department']} (2019)"}
            if user.get("surname") and i % 2:
                now["name.familyName"] = user["surname"]
                res["name"]["familyName"] = f"Former-{user['surname']}"
            out.stale[upn] = now
        else:
            out.provisioned.append(upn)
        scim.seed_user(res)
    for k in range(unmanaged):
        name = f"zoom-room-{k}@rooms.example" if k % 2 == 0 else f"svc-webinar-{k}@corp.example"
        scim.seed_user({"schemas": [CORE_USER], "userName": name, "active": True})
        out.unmanaged.append(name)
    synchronized = len(out.provisioned) + len(out.stale) + len(out.disabled)
    out.job_id = tenant.synchronization.add_job(
        sp,
        schema if schema is not None else zoom_job_schema(excluded_department=EXCLUDED_DEPARTMENT),
        synchronized={"User": synchronized},
        escrowed=len(out.failed),
    )
    if secrets:
        tenant.synchronization.set_secrets(sp, sync_all=sync_all, base_address=base_address)
    return out
