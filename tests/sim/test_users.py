"""The synthetic Graph population: deterministic, varied, cheap, invertible ids."""

from __future__ import annotations

import re
import time

from bulkprov.sim.users import (
    USER_PROPERTIES,
    generate_user,
    generate_users,
    index_from_id,
    index_from_upn,
    user_id,
)

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_deterministic_and_seed_dependent() -> None:
    assert generate_user(42, seed=1) == generate_user(42, seed=1)
    assert generate_user(42, seed=1)["id"] != generate_user(42, seed=2)["id"]
    assert list(generate_users(3, seed=5, start=10)) == [generate_user(i, 5) for i in (10, 11, 12)]


def test_shape_and_uniqueness() -> None:
    users = list(generate_users(5000, seed=3))
    for u in users:
        assert tuple(u) == USER_PROPERTIES
        assert GUID.match(u["id"])
        assert "@" in u["userPrincipalName"]
        assert isinstance(u["accountEnabled"], bool)
    assert len({u["id"] for u in users}) == 5000
    assert len({u["userPrincipalName"].lower() for u in users}) == 5000
    disabled = sum(not u["accountEnabled"] for u in users) / len(users)
    assert 0.015 < disabled < 0.05


def test_awkward_data_is_present() -> None:
    users = list(generate_users(5000, seed=3))
    names = " ".join(u["displayName"] for u in users)
    for fragment in ("Zoë", "Øyvind", "José", "Łukasz", "李雷", "O'Brien"):
        assert fragment in names
    assert any(u["city"] == "Ærøskøbing" for u in users)
    assert any(u["mail"] is None for u in users)
    assert any(u["department"] is None for u in users)
    assert {"Sales", "Engineering", "R&D"} <= {u["department"] for u in users}
    # mail in another form than the UPN (jsmith@corp vs jane.smith@example.com)
    assert any(
        u["mail"] and u["mail"].split("@")[0] != u["userPrincipalName"].split("@")[0] for u in users
    )
    # same address, different case only
    assert any(
        u["mail"]
        and u["mail"] != u["userPrincipalName"]
        and u["mail"].lower() == u["userPrincipalName"]
        for u in users
    )


def test_id_and_upn_invert_to_the_index() -> None:
    for i in (0, 1, 999, 123_456, 9_999_999):
        assert index_from_id(user_id(i, 11), 11) == i
        assert index_from_upn(generate_user(i, 11)["userPrincipalName"]) == i
    assert index_from_id(user_id(5, 11), 12) is None
    assert index_from_id("not-a-guid", 11) is None
    assert index_from_id("00000000-0000-4000-8000-00000000000z", 11) is None


def test_generation_is_cheap() -> None:
    n = 20_000
    start = time.process_time()
    for i in range(n):
        generate_user(i, 1)
    per_user = (time.process_time() - start) / n
    assert per_user < 50e-6  # a few µs in practice; generous for loaded CI machines
