"""CPU per user of the checkpoint writes alone (``StateStore.write_batch``), by batch size.

A first sync writes, per user, a ``users`` row (keyed by its random Graph GUID, plus the
``scim_id`` index) and a provisioning-log row (indexed by run and by GUID). This replays
that with realistic row sizes, without any network, and prints CPU µs per user for every
20,000 users, then the whole run: the cost grows with the database, and each commit
rewrites every B-tree page it touches, so bigger commits touch fewer pages per user.

    python -m benchmarks.bench_store --users 100000 --batch 500 --batch 5000
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bulkprov import _json
from bulkprov.checkpoint.store import StateStore, UserWrite

#: a mapped Zoom user as the state stores it (``attrs``) and the log shows it (``modified``)
_VALUES = {
    "userName": "adele.vance.000123@contoso.example",
    "name": {"givenName": "Adele", "familyName": "Vance"},
    "emails": [{"value": "adele.vance.000123@contoso.example", "primary": True, "type": "work"}],
    "active": True,
    "displayName": "Adele Vance",
    "title": "Retail Manager",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
        "department": "Retail",
        "employeeNumber": "000123",
    },
}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


#: the Graph attributes kept for merging changed-only delta entries (``users.source``)
_SOURCE = {
    "accountEnabled": True,
    "department": "Retail",
    "displayName": "Adele Vance",
    "givenName": "Adele",
    "id": "5c7e2b4a-6f1d-4f8e-9a51-0d2e4b8c9f10",
    "mail": "adele.vance.000123@contoso.example",
    "surname": "Vance",
    "userPrincipalName": "adele.vance.000123@contoso.example",
}


async def run(users: int, batch: int, pragmas: list[str], sources: bool = True) -> float:
    attrs = _json.dumps(_VALUES)
    source = _json.dumps(_SOURCE) if sources else None
    modified = attrs.decode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.sqlite3"
        async with await StateStore.open(path) as store:
            for pragma in pragmas:
                await store._conn.execute(f"PRAGMA {pragma}")
            run = await store.start_run()
            spent = 0.0  # CPU inside write_batch only (building the rows is not timed)
            interval, reported = 0.0, 0
            began = time.perf_counter()
            for i in range(0, users, batch):
                n = min(batch, users - i)
                writes = [
                    (
                        (i + j) // 999,
                        UserWrite(
                            str(uuid.uuid4()),
                            f"user{i + j}@contoso.example",
                            "create",
                            "success",
                            scim_id=uuid.uuid4().hex,
                            digest="0" * 32,
                            attrs=attrs,
                            active=True,
                            modified=modified,
                            link=True,
                            source=source,
                        ),
                    )
                    for j in range(n)
                ]
                before = _cpu()
                await store.write_batch(run, writes, {"created": i + n}, (f"page-{i}", i))
                took = _cpu() - before
                spent += took
                interval += took
                if (i + n) // 20_000 > reported // 20_000 or i + n == users:
                    per_user = interval / (i + n - reported) * 1e6
                    print(f"  {i + n:>9,} users: {per_user:6.1f} µs/user")
                    interval, reported = 0.0, i + n
            total = spent / users * 1e6
            size = path.stat().st_size / 1e6
        print(
            f"batch {batch:,}: {total:.1f} µs/user over {users:,} users "
            f"({time.perf_counter() - began:.1f} s, database {size:.0f} MB)"
        )
        return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--batch", type=int, action="append", help="rows per commit (repeatable)")
    ap.add_argument("--pragma", action="append", default=[], help="e.g. cache_size=-2000")
    ap.add_argument(
        "--no-sources", action="store_true", help="without users.source (schema 4's rows)"
    )
    args = ap.parse_args(argv)
    for batch in args.batch or [500, 5000]:
        asyncio.run(run(args.users, batch, args.pragma, sources=not args.no_sources))
    return 0


if __name__ == "__main__":
    sys.exit(main())
