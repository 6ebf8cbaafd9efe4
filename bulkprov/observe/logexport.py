"""The provisioning log for people and spreadsheets: ``--since`` and Entra-shaped CSV.

Entra's portal downloads the provisioning logs as three CSV files joined by change ID —
``ProvisioningLogs``, ``_ProvisioningSteps`` and ``_ModifiedProperties`` (facts.md §5.1,
PLOGS). :func:`write_entra_csv` writes the same three from bulkprov's log so the
spreadsheets and scripts admins already have keep working. Column names follow the Graph
``provisioningObjectSummary`` schema (facts.md §5.2); the portal's exact header text was not
verified, so a script should match on these names. The change ID is the log row's id,
the cycle ID the run's id.

Steps are derived from each entry the way Entra lays them out (import, scoping,
matching, export); bulkprov logs the new value of each modified property, not the old
one, so ``Old Value`` is empty.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
single quote (OWASP's rule against CSV injection): a spreadsheet shows it as text instead of
running it as a formula. The files are mode 0600.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bulkprov import _json
from bulkprov.checkpoint.files import open_private, private_dir
from bulkprov.redact import csv_cell

#: bulkprov log action → Entra's provisioningAction (Create, Update, Delete, Disable,
#: StagedDelete, Other; facts.md §5.1). A link is "Other" (an existing account matched).
ENTRA_ACTION = {
    "create": "Create",
    "update": "Update",
    "delete": "Delete",
    "disable": "Disable",
    "link": "Other",
    "other": "Other",
}
ENTRA_STATUS = {
    "success": "Success",
    "failure": "Failure",
    "skipped": "Skipped",
    "warning": "Warning",
}
#: every action a log entry can have (``group``: a group's create, update or delete)
LOG_ACTIONS = ("create", "update", "link", "disable", "delete", "group", "other")
#: every status a log entry can have
LOG_STATUSES = tuple(ENTRA_STATUS)

LOG_COLUMNS = (
    "Change ID",
    "Cycle ID",
    "Date (UTC)",
    "Action",
    "Status",
    "Status Reason",
    "Source System",
    "Source Identity ID",
    "Source Identity Name",
    "Target System",
    "Target Identity ID",
    "Target Identity Name",
    "bulkprov Action",
)
STEP_COLUMNS = ("Change ID", "Step", "Step Type", "Name", "Status", "Description")
PROPERTY_COLUMNS = ("Change ID", "Display Name", "Old Value", "New Value")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: a duration back from now (``90m``, ``24h``, ``7d``) or an ISO date/time
    (``2026-11-28``, ``2026-11-28T09:30``; local time unless it names a zone)."""
    now = time.time() if now is None else now
    m = _DURATION.match(text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2).lower()]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 24h, 7d) nor an ISO date (2026-11-28)"
        ) from exc
    return when.timestamp()


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def steps(entry: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(type, name, status, description) of one entry, in Entra's step order."""
    name = entry.get("user_name") or entry.get("graph_id")
    action, status, reason = entry["action"], entry["status"], entry.get("reason") or ""
    scim_id = entry.get("scim_id")
    out = [
        ("import", "Import the object", "success", f"Received user {name!r} from Microsoft Graph")
    ]
    if status == "failure" and action == "other":
        out.append(("processing", "Evaluate the object", "failure", reason))
        return out
    if status == "skipped":
        if reason == "unchanged" or reason.startswith("out of scope and already"):
            out.append(("scoping", "Determine if the object is in scope", "success", reason))
            out.append(("export", "Provision the object", "skipped", reason))
        else:
            out.append(("scoping", "Determine if the object is in scope", "skipped", reason))
        return out
    scope_text = reason if action == "disable" else "in scope"
    out.append(("scoping", "Determine if the object is in scope", "success", scope_text))
    if action == "create":
        match = "no matching account in the target"
    elif action == "link":
        match = f"matched existing account {scim_id}"
    else:
        match = f"linked account {scim_id}"
    out.append(("matching", "Match the object between source and target", "success", match))
    detail = reason if status == "failure" else f"{action}: {reason or 'done'}"
    out.append(("export", f"Provision the object ({action})", status, detail))
    return out


class _Writer:
    """A CSV writer whose text cells are :func:`~bulkprov.redact.csv_cell`: a user's
    ``=HYPERLINK(…)`` or ``@SUM(…)`` is written ``'=HYPERLINK(…)``, text to a spreadsheet."""

    def __init__(self, f: IO[str]) -> None:
        self._w = csv.writer(f)

    def writerow(self, row: Iterable[Any]) -> None:
        self._w.writerow([csv_cell(v) if isinstance(v, str) else v for v in row])


def write_entra_csv(entries: Iterable[dict[str, Any]], directory: Path) -> list[Path]:
    """Write the three CSV files into ``directory``; return their paths.

    The files are mode 0600 (a folder created for them 0700): they hold the tenant's names.
    """
    private_dir(directory)
    paths = [
        directory / "ProvisioningLogs.csv",
        directory / "ProvisioningLogs_ProvisioningSteps.csv",
        directory / "ProvisioningLogs_ModifiedProperties.csv",
    ]
    with (
        open_private(paths[0], newline="") as f_log,
        open_private(paths[1], newline="") as f_steps,
        open_private(paths[2], newline="") as f_props,
    ):
        log, st, props = _Writer(f_log), _Writer(f_steps), _Writer(f_props)
        log.writerow(LOG_COLUMNS)
        st.writerow(STEP_COLUMNS)
        props.writerow(PROPERTY_COLUMNS)
        for e in entries:
            change = str(e["id"])
            log.writerow(
                (
                    change,
                    e["run_id"],
                    utc(e["at"]),
                    ENTRA_ACTION.get(e["action"], "Other"),
                    ENTRA_STATUS.get(e["status"], e["status"]),
                    e.get("reason") or "",
                    "Microsoft Entra ID",
                    e.get("graph_id") or "",
                    e.get("user_name") or "",
                    "SCIM",
                    e.get("scim_id") or "",
                    e.get("user_name") or "",
                    e["action"],
                )
            )
            for i, (kind, name, status, text) in enumerate(steps(e), 1):
                st.writerow((change, i, kind, name, ENTRA_STATUS.get(status, status), text))
            if e.get("modified"):
                for attr, value in _json.loads(e["modified"]).items():
                    shown = value if isinstance(value, str) else _json.dumps(value).decode()
                    props.writerow((change, attr, "", shown))
    return paths
