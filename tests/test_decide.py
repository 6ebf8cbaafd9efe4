"""The per-user decision table (pure)."""

from __future__ import annotations

from bulkprov.checkpoint.store import UserState
from bulkprov.pipeline.decide import decide

VALUES = {"userName": "a@x.com", "displayName": "A", "active": True}


def state(active=True, digest="d1", attrs=None):
    return UserState("g1", "s1", "a@x.com", digest, attrs or dict(VALUES), active)


def test_unmanaged_out_of_scope_is_never_touched():
    d = decide(
        in_scope=False,
        scope_reason="department EQUALS Sales is false",
        update_values=None,
        digest=None,
        state=None,
        match=None,
    )
    assert d.kind == "skip" and "department" in d.reason and d.scim_id is None


def test_unmanaged_in_scope_without_match_is_created():
    d = decide(
        in_scope=True, scope_reason="", update_values=VALUES, digest="d1", state=None, match=None
    )
    assert d.kind == "create"


def test_match_links_and_patches_only_differences():
    resource = {"id": "s9", "userName": "A@X.com", "displayName": "Old", "active": True}
    d = decide(
        in_scope=True,
        scope_reason="",
        update_values=VALUES,
        digest="d1",
        state=None,
        match=("s9", resource),
    )
    assert d.kind == "link" and d.scim_id == "s9"
    assert d.changes == {"userName": "a@x.com", "displayName": "A"}


def test_managed_unchanged_digest_sends_nothing():
    d = decide(
        in_scope=True, scope_reason="", update_values=VALUES, digest="d1", state=state(), match=None
    )
    assert d.kind == "skip" and d.reason == "unchanged"


def test_managed_changed_patches_only_changed_attribute():
    new = dict(VALUES, displayName="B")
    d = decide(
        in_scope=True, scope_reason="", update_values=new, digest="d2", state=state(), match=None
    )
    assert d.kind == "update" and d.changes == {"displayName": "B"}


def test_managed_out_of_scope_is_disabled_not_deleted():
    d = decide(
        in_scope=False,
        scope_reason="accountEnabled is false",
        update_values=None,
        digest=None,
        state=state(),
        match=None,
    )
    assert d.kind == "disable" and d.changes == {"active": False} and d.scim_id == "s1"


def test_disabled_and_still_out_of_scope_is_skipped():
    d = decide(
        in_scope=False,
        scope_reason="x",
        update_values=None,
        digest=None,
        state=state(active=False),
        match=None,
    )
    assert d.kind == "skip"


def test_back_in_scope_reactivates():
    attrs = dict(VALUES, active=False)
    d = decide(
        in_scope=True,
        scope_reason="",
        update_values=VALUES,
        digest="d1",
        state=state(active=False, digest=None, attrs=attrs),
        match=None,
    )
    assert d.kind == "update" and d.changes == {"active": True}


def test_a_cleared_source_keeps_the_target_value_by_default():
    """Issue 20 item 4: Entra does not provision nulls (facts.md §2.1): nothing is sent."""
    attrs = dict(VALUES, title="Engineer")
    d = decide(
        in_scope=True,
        scope_reason="",
        update_values=VALUES,
        digest="d2",
        state=state(attrs=attrs),
        match=None,
    )
    assert d.kind == "skip" and d.reason == "unchanged"


def test_clear_on_null_removes_a_cleared_attribute():
    attrs = dict(VALUES, title="Engineer")
    d = decide(
        in_scope=True,
        scope_reason="",
        update_values=VALUES,
        digest="d2",
        state=state(attrs=attrs),
        match=None,
        clearable=frozenset({"title", "displayName"}),
    )
    assert d.kind == "update" and d.changes == {"title": None} and d.known == attrs


def test_a_match_is_compared_on_every_mapped_path():
    """A matched account's values of paths the source leaves null are known (kept, or
    removed with clear_on_null), so a later add does not duplicate an element."""
    resource = {"id": "s9", "userName": "a@x.com", "displayName": "A", "active": True, "title": "T"}
    d = decide(
        in_scope=True,
        scope_reason="",
        update_values=VALUES,
        digest="d1",
        state=None,
        match=("s9", resource),
        targets=("userName", "displayName", "active", "title"),
        clearable=frozenset({"title"}),
    )
    assert d.kind == "link" and d.changes == {"title": None}
    assert d.known == {"userName": "a@x.com", "displayName": "A", "active": True, "title": "T"}
