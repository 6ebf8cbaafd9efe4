"""Updates that real inputs make (issue 20): a filtered path with nothing to replace, a
cleared source attribute, delta entries that carry only the changed properties.

Every cycle goes through the real pipeline over loopback HTTP into the SCIM simulator,
whose PATCH is RFC-strict: ``replace`` on a filtered path with no matching element answers
400 ``noTarget`` (RFC 7644 §3.5.2.3), as scim2-server does.
"""

from __future__ import annotations

from typing import Any

import pytest

from bulkprov.pipeline.run import run_sync
from bulkprov.scim.paths import get_value

from .conftest import FAST_RETRY, SECRETS, make_config
from .test_lifecycle import Spy, enabled

WORK = 'emails[type eq "work"].value'


async def sync(cfg: Any) -> Any:
    return await run_sync(cfg, SECRETS, policy=FAST_RETRY)


def patches(spy: Spy) -> list[list[dict[str, Any]]]:
    return [body["Operations"] for method, _, body in spy.writes() if method == "PATCH"]


@pytest.mark.parametrize("clear", [False, True], ids=["default", "clear_on_null"])
async def test_a_user_gains_changes_and_loses_a_mail(servers, tenant, scim, tmp_path, clear):
    """Items 3 and 4: gaining a mail adds the whole work email (a ``replace`` would be
    refused: noTarget); changing it replaces it; losing it keeps it (Entra's default) or,
    with ``target.clear_on_null``, removes it; gaining one again then adds or replaces."""
    user = next(u for u in enabled(tenant) if u.get("mail") is None)
    upn = user["userPrincipalName"]
    cfg = make_config(servers, tmp_path / "s.db", target__clear_on_null=clear)
    assert (await sync(cfg)).counts["failed"] == 0
    assert get_value(scim.find(upn), WORK) is None
    spy = Spy()
    scim.faults = spy

    tenant.update_user(user["id"], mail="first.address@corp.example")
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["failed"] == 0, result
    email = {"type": "work", "primary": True, "value": "first.address@corp.example"}
    assert patches(spy) == [[{"op": "add", "path": "emails", "value": [email]}]]
    assert scim.find(upn)["emails"] == [email]

    spy.seen.clear()
    tenant.update_user(user["id"], mail="second.address@corp.example")
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["failed"] == 0, result
    assert patches(spy) == [
        [{"op": "replace", "path": WORK, "value": "second.address@corp.example"}]
    ]
    assert get_value(scim.find(upn), WORK) == "second.address@corp.example"

    spy.seen.clear()
    tenant.update_user(user["id"], mail=None)
    result = await sync(cfg)
    assert result.counts["failed"] == 0, result
    if clear:
        assert patches(spy) == [[{"op": "remove", "path": 'emails[type eq "work"]'}]]
        assert not scim.find(upn).get("emails")
    else:
        assert spy.writes() == []  # Entra never provisions a null: the old value stays
        assert get_value(scim.find(upn), WORK) == "second.address@corp.example"

    spy.seen.clear()
    tenant.update_user(user["id"], mail="third.address@corp.example")
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["failed"] == 0, result
    if clear:
        email = {"type": "work", "primary": True, "value": "third.address@corp.example"}
        assert patches(spy) == [[{"op": "add", "path": "emails", "value": [email]}]]
    else:  # the target kept the old one: replaced, never a second work email
        assert patches(spy) == [
            [{"op": "replace", "path": WORK, "value": "third.address@corp.example"}]
        ]
    assert scim.find(upn)["emails"] == [
        {"type": "work", "primary": True, "value": "third.address@corp.example"}
    ]


async def test_clear_on_null_removes_a_cleared_attribute(servers, tenant, scim, tmp_path):
    """Item 4: a surname cleared in Entra is removed from the target with clear_on_null."""
    user = next(u for u in enabled(tenant) if u.get("surname") and u.get("mail"))
    upn = user["userPrincipalName"]
    cfg = make_config(servers, tmp_path / "s.db", target__clear_on_null=True)
    await sync(cfg)
    spy = Spy()
    scim.faults = spy
    tenant.update_user(user["id"], surname=None)
    result = await sync(cfg)
    assert result.counts["updated"] == 1 and result.counts["failed"] == 0
    assert patches(spy) == [[{"op": "remove", "path": "name.familyName"}]]
    assert "familyName" not in scim.find(upn)["name"]
