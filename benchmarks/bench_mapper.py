"""Mapper and scope throughput: synthetic Graph users through the default Zoom table.

Run: ``.venv/bin/python benchmarks/bench_mapper.py [--users 100000] [--repeat 3]``

Prints µs per user (best of ``--repeat`` runs) for:

* ``map_user``: the values and update values only;
* ``+ digest``: what every user costs (the pipeline compares digests to skip unchanged
  users);
* ``+ body``: what a create costs (the SCIM resource assembled and serialised);
* ``+ Replace regex``: the table plus one ``Replace`` row with a regular expression (each
  match runs with the regex time limit);
* ``scope``: two scoping filters (three clauses, one a REGEX MATCH) evaluated.

CPU only: no I/O, no event loop.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from typing import Any

from bulkprov.config import AttributeMapping, ScopingClause, ScopingFilter
from bulkprov.mapping import (
    DEFAULT_ZOOM_MAPPINGS,
    MappingContext,
    compile_mappings,
)
from bulkprov.scope import compile_scope

FIRST = ["Ada", "Zoë", "Łukasz", "Jürgen", "Mei", "Omar", "Ingrid", "José", "Priya", "Tomás"]
LAST = ["Lovelace", "Ørsted", "Nowak", "Müller", "Chen", "Haddad", "Berg", "García", "Iyer"]
DEPARTMENTS = ["Sales", "Engineering", "Finance", None, "Support", "Marketing"]


def synthetic_users(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    users = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        upn = f"{first.lower()}.{last.lower()}{i}@contoso.com"
        users.append(
            {
                "id": f"{i:08x}-0000-4000-8000-{rng.getrandbits(48):012x}",
                "userPrincipalName": upn,
                "mail": upn if rng.random() > 0.05 else None,
                "givenName": first,
                "surname": last,
                "displayName": f"{first} {last}",
                "department": rng.choice(DEPARTMENTS),
                "accountEnabled": rng.random() > 0.1,
                "jobTitle": "Engineer" if i % 3 else None,
                "employeeId": str(1_000_000 + i),
            }
        )
    return users


def best_of(repeat: int, n: int, run: Callable[[], None]) -> float:
    """The best wall time per user, in µs, of ``repeat`` runs.

    The garbage collector stays on, as it is in the pipeline.
    """
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) / n * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    mapper = compile_mappings(DEFAULT_ZOOM_MAPPINGS)
    users = synthetic_users(args.users)
    active = MappingContext(is_soft_deleted=False)
    deleted = MappingContext(is_soft_deleted=True)
    contexts = [active if u["accountEnabled"] else deleted for u in users]
    pairs = list(zip(users, contexts, strict=True))
    map_user = mapper.map_user

    def values_only() -> None:
        for user, ctx in pairs:
            map_user(user, ctx)

    def with_digest() -> None:
        for user, ctx in pairs:
            _ = map_user(user, ctx).digest

    def with_body() -> None:
        for user, ctx in pairs:
            m = map_user(user, ctx)
            _ = m.digest
            _ = m.body

    with_regex = compile_mappings(
        [
            *DEFAULT_ZOOM_MAPPINGS,
            AttributeMapping(target="nickName", expression='Replace([mail], , "@.*$", , "", , )'),
        ]
    ).map_user

    def regex_row() -> None:
        for user, ctx in pairs:
            with_regex(user, ctx)

    scope = compile_scope(
        [
            ScopingFilter(
                name="Sales",
                clauses=[
                    ScopingClause(attribute="department", operator="EQUALS", value="Sales"),
                    ScopingClause(attribute="jobTitle", operator="IS NOT NULL"),
                ],
            ),
            ScopingFilter(
                name="Contoso",
                clauses=[
                    ScopingClause(
                        attribute="userPrincipalName",
                        operator="REGEX MATCH",
                        value=r".*\@contoso\.com$",
                    )
                ],
            ),
        ]
    )
    evaluate = scope.evaluate

    def scoping() -> None:
        for user in users:
            evaluate(user)

    n = len(users)
    print(f"{n:,} synthetic users, default Zoom mapping table ({len(mapper.targets)} targets)")
    print(f"  map_user          {best_of(args.repeat, n, values_only):6.2f} µs/user")
    print(f"  map_user + digest {best_of(args.repeat, n, with_digest):6.2f} µs/user")
    print(f"  + resource + body {best_of(args.repeat, n, with_body):6.2f} µs/user")
    print(f"  + Replace regex   {best_of(args.repeat, n, regex_row):6.2f} µs/user (map_user)")
    print(f"  scope (2 filters) {best_of(args.repeat, n, scoping):6.2f} µs/user")


if __name__ == "__main__":
    main()
