"""``bulkprov duplicates``: the admin guide's "Duplicate users in Zoom", as a report.

Read-only: the in-scope Entra users (Graph), the target's accounts (one listing) and the
state's links and held-back users are compared, and nothing is written anywhere. Each row
says what it found and what to do:

===================  =========================================================================
kind                 what it means
===================  =========================================================================
email-not-upn        a Zoom account's email (or userName) is a user's mail, which is not its
                     mapped userName (the UPN): the sync would create a second account
case-only            an account's userName, or a user's mail against its UPN, differ only by
                     letter case (matched case-insensitively: no duplicate, told for review)
same-user-name       two Entra users map to one userName (the second fails as
                     DuplicateSourceEntries)
pending-invitation   a pending Zoom invitation holds a user's userName (it is Skipped until
                     the invitation is accepted or deleted)
unmanaged            an account no in-scope user maps to and bulkprov has not linked
===================  =========================================================================

:func:`find_duplicates` is the pure comparison (tested without a network);
:func:`duplicate_report` reads the three sources; :func:`render` writes text, CSV or JSON
(:func:`text_lines`, :func:`csv_lines`, :func:`as_dicts`: what the command prints).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bulkprov import _json
from bulkprov.checkpoint.store import StateStore, Waiting
from bulkprov.config import Config
from bulkprov.credentials import Secrets
from bulkprov.errors import UserDataError
from bulkprov.graph.directory import read_sources
from bulkprov.pipeline import Engine, open_clients
from bulkprov.redact import csv_cell
from bulkprov.scim import requests as rq
from bulkprov.scim.responses import list_resources

KINDS = ("email-not-upn", "case-only", "same-user-name", "pending-invitation", "unmanaged")
WORK_EMAIL = 'emails[type eq "work"].value'


@dataclass(frozen=True, slots=True)
class Row:
    kind: str
    #: the Entra user(s) concerned: UPN (and object id)
    user: str
    #: the target account concerned: userName (and id)
    account: str
    detail: str
    action: str


@dataclass(frozen=True, slots=True)
class SourceUser:
    """What the report needs of one in-scope Entra user."""

    graph_id: str
    upn: str
    mail: str | None
    #: the userName the mapping gives
    user_name: str


def _account(resource: Mapping[str, Any]) -> str:
    return f"{resource.get('userName')} ({resource.get('id')})"


def _emails(resource: Mapping[str, Any]) -> set[str]:
    out = set()
    name = resource.get("userName")
    if isinstance(name, str):
        out.add(name.lower())
    emails = resource.get("emails")
    if isinstance(emails, list):
        for e in emails:
            if isinstance(e, dict) and isinstance(e.get("value"), str):
                out.add(e["value"].lower())
    return out


def find_duplicates(
    users: Iterable[SourceUser],
    accounts: Iterable[Mapping[str, Any]],
    linked: Mapping[str, str],
    waiting: Iterable[Waiting] = (),
) -> list[Row]:
    """Compare in-scope users with the target's accounts; one :class:`Row` per finding.

    ``linked``: SCIM id → Graph id of the accounts bulkprov manages (the state's links).
    """
    by_name: dict[str, list[SourceUser]] = {}
    users = list(users)
    for u in users:
        by_name.setdefault(u.user_name.lower(), []).append(u)
    accounts = [a for a in accounts if isinstance(a.get("id"), str)]
    account_by_name: dict[str, Mapping[str, Any]] = {}
    accounts_by_email: dict[str, list[Mapping[str, Any]]] = {}
    for a in accounts:
        name = a.get("userName")
        if isinstance(name, str):
            account_by_name[name.lower()] = a
        for email in _emails(a):
            accounts_by_email.setdefault(email, []).append(a)
    #: accounts a row already explains (not reported again as unmanaged)
    explained: set[str] = set()
    rows: list[Row] = []
    for name, owners in by_name.items():
        if len(owners) > 1:
            rows.append(
                Row(
                    "same-user-name",
                    ", ".join(f"{u.upn} ({u.graph_id})" for u in owners),
                    _account(account_by_name[name]) if name in account_by_name else "",
                    f"{len(owners)} Entra users map to userName {owners[0].user_name!r}",
                    "change the UPN (or the mail, if userName is mapped from it) of all but one "
                    "of them in Entra; until then the second one fails as "
                    "DuplicateSourceEntries",
                )
            )
    for u in users:
        own = account_by_name.get(u.user_name.lower())
        mail = (u.mail or "").lower()
        if own is not None and own.get("userName") != u.user_name:
            rows.append(
                Row(
                    "case-only",
                    f"{u.upn} ({u.graph_id})",
                    _account(own),
                    f"the account's userName {own.get('userName')!r} and the mapped "
                    f"{u.user_name!r} differ only by letter case",
                    "nothing to do: bulkprov and Zoom match userNames case-insensitively (Zoom "
                    "keeps its spelling; it does not change a userName by SCIM)",
                )
            )
        if mail and mail != u.user_name.lower():
            for other in accounts_by_email.get(mail, []):
                if other is own:
                    continue
                explained.add(str(other["id"]))
                rows.append(
                    Row(
                        "email-not-upn",
                        f"{u.upn} ({u.graph_id})",
                        _account(other),
                        f"the account holds the user's mail {u.mail!r}, but the mapping's "
                        f"userName is {u.user_name!r}: "
                        + (
                            f"the user has a second account, {_account(own)}"
                            if own is not None
                            else "the sync would create a second account"
                        ),
                        "map userName from mail (the starter config shows how), or merge the "
                        "accounts in Zoom (change this account's email to the userName, or "
                        "delete the one not used); then `bulkprov sync --rematch`",
                    )
                )
        elif u.mail and mail == u.user_name.lower() and u.mail != u.user_name:
            rows.append(
                Row(
                    "case-only",
                    f"{u.upn} ({u.graph_id})",
                    _account(own) if own is not None else "",
                    f"the user's mail {u.mail!r} and userName {u.user_name!r} differ only by "
                    "letter case",
                    "nothing to do: Zoom compares emails case-insensitively (no duplicate)",
                )
            )
    for w in waiting:
        if w.kind != "pending":
            continue
        rows.append(
            Row(
                "pending-invitation",
                f"{w.user_name} ({w.graph_id})",
                str(w.user_name or ""),
                "a pending Zoom invitation holds the userName (neither listed nor creatable "
                "by SCIM)",
                "have the user accept the invitation, or delete it in Zoom (User Management → "
                "Users → Pending); the next sync links or creates the account",
            )
        )
    for a in accounts:
        name = str(a.get("userName") or "").lower()
        if a["id"] in linked or a["id"] in explained or name in by_name:
            continue
        rows.append(
            Row(
                "unmanaged",
                "",
                _account(a),
                "no in-scope Entra user maps to this account and bulkprov has not linked it",
                "nothing to do: bulkprov never touches it; to manage it, assign its owner to "
                "the app in Entra (it is then linked by matching)",
            )
        )
    order = {k: i for i, k in enumerate(KINDS)}
    rows.sort(key=lambda r: (order[r.kind], r.user, r.account))
    return rows


async def duplicate_report(cfg: Config, secrets: Secrets, **transports: Any) -> list[Row]:
    """Read the in-scope users, the target's accounts and the state; compare them."""
    engine = Engine(cfg)
    users: list[SourceUser] = []
    accounts: list[dict[str, Any]] = []
    linked: dict[str, str] = {}
    waiting: list[Waiting] = []
    async with open_clients(cfg, secrets, **transports) as (graph, scim):
        sources = await read_sources(
            graph,
            mode=cfg.scope.mode,
            service_principal_id=cfg.scope.service_principal_id,
            groups=False,
            flatten=cfg.groups.flatten_nested,
        )
        first = (
            f"{graph.base_url}/users?$select={','.join(engine.select)}&$top={cfg.graph.page_size}"
        )
        async for page in graph.pages(first):
            for user in page.users:
                if not isinstance(user, dict):
                    continue
                try:
                    graph_id, in_scope, _, mapped = engine.evaluate(user, sources)
                except UserDataError:
                    continue  # the sync reports it; not a duplicate question
                if not in_scope or mapped is None:
                    continue
                mail = user.get("mail")
                work = mapped.values.get(WORK_EMAIL)
                users.append(
                    SourceUser(
                        graph_id,
                        str(user.get("userPrincipalName") or ""),
                        mail
                        if isinstance(mail, str)
                        else (work if isinstance(work, str) else None),
                        str(mapped.user_name),
                    )
                )
        start, page_size = 1, cfg.target.list_page_size
        while True:
            resources, total = list_resources(await scim.send(rq.list_users(start, page_size)))
            accounts += resources
            start += len(resources)
            if not resources or start > total:
                break
    if cfg.state.path.exists():  # no state yet: nothing is linked, nothing waits
        async with await StateStore.open(cfg.state.path) as store:
            linked = await store.owners([str(a["id"]) for a in accounts if "id" in a])
            waiting = list((await store.waiting()).values())
    return find_duplicates(users, accounts, linked, waiting)


_HEADER = ("kind", "user", "account", "detail", "action")


def text_lines(rows: list[Row]) -> list[str]:
    """The text report, one line each (a value's own line breaks stay in its line: the
    command prints each through ``echo``, which escapes them)."""
    if not rows:
        return ["no duplicates, email mismatches, pending invitations or unmanaged accounts"]
    lines = []
    for r in rows:
        lines.append(f"[{r.kind}] {r.user or '-'}  →  {r.account or '-'}")
        lines.append(f"    {r.detail}")
        lines.append(f"    what to do: {r.action}")
    counts = {k: sum(1 for r in rows if r.kind == k) for k in KINDS}
    lines.append("")
    lines.append("  ".join(f"{k}: {n}" for k, n in counts.items() if n))
    return lines


def csv_lines(rows: list[Row]) -> list[str]:
    """The CSV report, one record each (without its line end); every cell a spreadsheet
    shows as text (:func:`~bulkprov.redact.csv_cell`: a name such as ``=HYPERLINK(…)`` is
    never a formula)."""
    out = []
    for record in (_HEADER, *((r.kind, r.user, r.account, r.detail, r.action) for r in rows)):
        buffer = io.StringIO()
        csv.writer(buffer).writerow([csv_cell(v) for v in record])
        out.append(buffer.getvalue().removesuffix("\r\n"))
    return out


def as_dicts(rows: list[Row]) -> list[dict[str, str]]:
    """The JSON report: a list of objects."""
    return [asdict(r) for r in rows]


def render(rows: list[Row], fmt: str) -> str:
    """``text`` (one block per row), ``csv`` or ``json`` (a list of objects), as a file."""
    if fmt == "json":
        return _json.dumps(as_dicts(rows)).decode() + "\n"
    if fmt == "csv":
        return "".join(line + "\r\n" for line in csv_lines(rows))
    return "\n".join(text_lines(rows)) + "\n"


__all__ = [
    "KINDS",
    "Row",
    "SourceUser",
    "as_dicts",
    "csv_lines",
    "duplicate_report",
    "find_duplicates",
    "render",
    "text_lines",
]
