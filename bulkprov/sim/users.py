"""Deterministic synthetic Microsoft Graph users, generated on demand from an index.

A tenant of a million users must cost nothing until it is read, and two runs with the same seed
must see the same people: so user ``i`` is a pure function of ``(seed, i)``: one keyed BLAKE2b
digest supplies every random choice. Generating one user costs a few microseconds; nothing is
materialised up front (:class:`~bulkprov.sim.graph.tenant.GraphTenant` builds a page's users
when the page is requested).

The data is deliberately awkward, because real directories are: non-ASCII names (Zoë, Øyvind,
Łukasz, 李雷), apostrophes (O'Brien, also in the UPN), ``mail`` missing or different from the
UPN (``jsmith4@corp.example`` vs ``jane.smith4@example.com``) or differing only in case, a
department ``R&D``, ≈3% disabled accounts, and ``None`` in optional fields.

The ``id`` is a GUID whose last group encodes the index through a seed-keyed bijection, so the
tenant can find a user by id in O(1) (:func:`index_from_id`) without keeping a table. A UPN's
local part ends with the index for the same reason (:func:`index_from_upn`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

__all__ = [
    "DEFAULT_SELECT",
    "USER_PROPERTIES",
    "generate_user",
    "generate_users",
    "index_from_id",
    "index_from_upn",
    "user_id",
]

#: What ``GET /users`` returns without ``$select`` (GRAPH user-list, facts.md §7.2).
DEFAULT_SELECT: tuple[str, ...] = (
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)

#: Every property a generated user carries (all keys present; absent values are ``None``,
#: as Graph returns ``null`` for a selected property that has no value).
USER_PROPERTIES: tuple[str, ...] = (
    "id",
    "userPrincipalName",
    "mail",
    "mailNickname",
    "givenName",
    "surname",
    "displayName",
    "department",
    "jobTitle",
    "accountEnabled",
    "employeeId",
    "businessPhones",
    "mobilePhone",
    "officeLocation",
    "usageLocation",
    "city",
    "country",
    "preferredLanguage",
    "userType",
)

# (display form, ASCII form for the UPN)
_GIVEN: tuple[tuple[str, str], ...] = (
    ("Jane", "jane"),
    ("John", "john"),
    ("Zoë", "zoe"),
    ("Øyvind", "oyvind"),
    ("José", "jose"),
    ("Łukasz", "lukasz"),
    ("Anna", "anna"),
    ("Siobhán", "siobhan"),
    ("Björn", "bjorn"),
    ("François", "francois"),
    ("Søren", "soren"),
    ("Chloé", "chloe"),
    ("Priya", "priya"),
    ("Mohammed", "mohammed"),
    ("Jürgen", "jurgen"),
    ("Renée", "renee"),
    ("D'Arcy", "darcy"),
    ("Ngọc", "ngoc"),
    ("Maria", "maria"),
    ("Oliver", "oliver"),
    ("Émilie", "emilie"),
    ("Ólafur", "olafur"),
    ("Małgorzata", "malgorzata"),
    ("Kwame", "kwame"),
)
_SURNAME: tuple[tuple[str, str], ...] = (
    ("Smith", "smith"),
    ("O'Brien", "o'brien"),  # apostrophe kept in the UPN: legal there, and a quoting test
    ("Müller", "muller"),
    ("Nørgaard", "norgaard"),
    ("García", "garcia"),
    ("Wójcik", "wojcik"),
    ("Lindqvist", "lindqvist"),
    ("D'Angelo", "dangelo"),
    ("Nguyễn", "nguyen"),
    ("Østergård", "ostergard"),
    ("Kowalski", "kowalski"),
    ("Tanaka", "tanaka"),
    ("van der Berg", "vanderberg"),
    ("Johnson", "johnson"),
    ("Brown", "brown"),
    ("Şahin", "sahin"),
    ("Ferreira", "ferreira"),
    ("Dubois", "dubois"),
    ("Jónsdóttir", "jonsdottir"),
    ("Okafor", "okafor"),
)
# East-Asian names: family name first, no space in Chinese display names.
# (given, surname, given ASCII, surname ASCII, displayName)
_CJK: tuple[tuple[str, str, str, str, str], ...] = (
    ("雷", "李", "lei", "li", "李雷"),
    ("娜", "王", "na", "wang", "王娜"),
    ("健", "张", "jian", "zhang", "张健"),
    ("花子", "山田", "hanako", "yamada", "山田 花子"),
    ("지민", "김", "jimin", "kim", "김지민"),
)
_DEPARTMENTS: tuple[str | None, ...] = (
    "Sales",
    "Engineering",
    "Engineering",
    "Marketing",
    "Finance",
    "Human Resources",
    "Support",
    "R&D",
    None,
)
_TITLES: tuple[str | None, ...] = (
    "Account Executive",
    "Software Engineer",
    "Senior Software Engineer",
    "Product Manager",
    "Accountant",
    "Support Specialist",
    "Director of Sales",
    "Chef d'équipe",
    None,
)
# (city, country, usageLocation, preferredLanguage, office prefix)
_PLACES: tuple[tuple[str, str, str, str, str], ...] = (
    ("Seattle", "United States", "US", "en-US", "SEA"),
    ("Ærøskøbing", "Denmark", "DK", "da-DK", "ÆRØ"),
    ("Oslo", "Norway", "NO", "nb-NO", "OSL"),
    ("Kraków", "Poland", "PL", "pl-PL", "KRK"),
    ("São Paulo", "Brazil", "BR", "pt-BR", "GRU"),
    ("München", "Germany", "DE", "de-DE", "MUC"),
    ("北京", "China", "CN", "zh-CN", "PEK"),
    ("Zürich", "Switzerland", "CH", "de-CH", "ZRH"),
    ("London", "United Kingdom", "GB", "en-GB", "LHR"),
    ("Sevilla", "Spain", "ES", "es-ES", "SVQ"),
    ("Reykjavík", "Iceland", "IS", "is-IS", "KEF"),
    ("Lagos", "Nigeria", "NG", "en-NG", "LOS"),
)
_UPN_DOMAINS = ("corp.example", "corp.example", "corp.example", "eu.corp.example")

_M48 = (1 << 48) - 1
_ODD = 0x9E3779B97F4B  # odd, so multiplication is a bijection modulo 2**48
_ODD_INV = pow(_ODD, -1, 1 << 48)
_UPN_INDEX = re.compile(r"(\d+)@[^@]+$")


@lru_cache(maxsize=64)
def _seed_key(seed: int) -> tuple[Any, int]:
    """A keyed BLAKE2b state for ``seed`` (copied per user: cheaper than re-keying) and the
    48-bit mask that hides the index in the GUID's last group."""
    key = hashlib.blake2b(f"bulkprov-sim:{seed}".encode(), digest_size=32).digest()
    return hashlib.blake2b(key=key, digest_size=32), int.from_bytes(key[:6], "big")


def _digest(index: int, seed: int) -> bytes:
    state = _seed_key(seed)[0].copy()
    state.update(index.to_bytes(8, "little"))
    digest: bytes = state.digest()
    return digest


def _guid(h: bytes, index: int, seed: int) -> str:
    _, mask = _seed_key(seed)
    tail = ((index * _ODD) & _M48) ^ mask
    head = h.hex()
    # version 4, RFC 4122 variant: looks like any Entra object id
    return f"{head[:8]}-{head[8:12]}-4{head[13:16]}-{'89ab'[h[8] & 3]}{head[17:20]}-{tail:012x}"


def user_id(index: int, seed: int) -> str:
    """The Graph ``id`` (a GUID) of user ``index`` in tenant ``seed``."""
    return _guid(_digest(index, seed), index, seed)


def index_from_id(object_id: str, seed: int) -> int | None:
    """Invert :func:`user_id` (``None`` if ``object_id`` is not one of ours)."""
    if len(object_id) != 36:
        return None
    try:
        tail = int(object_id[24:], 16)
    except ValueError:
        return None
    _, mask = _seed_key(seed)
    index = ((tail ^ mask) * _ODD_INV) & _M48
    return index if user_id(index, seed) == object_id.lower() else None


def index_from_upn(upn: str) -> int | None:
    """The index a generated UPN ends with (``jane.smith42@corp.example`` → 42), unchecked."""
    m = _UPN_INDEX.search(upn)
    return int(m.group(1)) if m else None


def generate_user(index: int, seed: int) -> dict[str, Any]:
    """User ``index`` of tenant ``seed``, with every key of :data:`USER_PROPERTIES`."""
    h = _digest(index, seed)
    if h[20] < 8:  # ~3%
        given, surname, g_ascii, s_ascii, display = _CJK[h[21] % len(_CJK)]
    else:
        given, g_ascii = _GIVEN[h[21] % len(_GIVEN)]
        surname, s_ascii = _SURNAME[h[22] % len(_SURNAME)]
        display = f"{given} {surname}"
    domain = _UPN_DOMAINS[h[23] & 3]
    style = h[24]
    if style < 40:  # ~16%: short UPN, mail in another domain (jsmith vs jane.smith)
        upn = f"{g_ascii[0]}{s_ascii}{index}@{domain}"
        mail: str | None = f"{g_ascii}.{s_ascii}{index}@example.com"
    else:
        upn = f"{g_ascii}.{s_ascii}{index}@{domain}"
        if style < 53:  # ~5%: no mailbox
            mail = None
        elif style < 66:  # ~5%: same address, different case
            mail = f"{g_ascii.capitalize()}.{s_ascii.capitalize()}{index}@{domain}"
        else:
            mail = upn
    city, country, usage, lang, office = _PLACES[h[25] % len(_PLACES)]
    b26, b27, b28, b29 = h[26], h[27], h[28], h[29]
    return {
        "id": _guid(h, index, seed),
        "userPrincipalName": upn,
        "mail": mail,
        "mailNickname": upn.split("@", 1)[0],
        "givenName": given if b26 >= 5 else None,
        "surname": surname if b26 >= 5 else None,
        "displayName": display,
        "department": _DEPARTMENTS[b27 % len(_DEPARTMENTS)],
        "jobTitle": _TITLES[b28 % len(_TITLES)],
        "accountEnabled": h[30] >= 8,  # ~3% disabled
        "employeeId": f"E{index:07d}" if b29 >= 13 else None,
        "businessPhones": [f"+1 425 555 {index % 10000:04d}"] if b26 & 1 else [],
        "mobilePhone": f"+47 9{index % 10000000:07d}" if b27 & 2 else None,
        "officeLocation": f"{office}-{b28 % 9 + 1}.{b29 % 40:02d}" if b28 & 4 else None,
        "usageLocation": usage,
        "city": city if h[31] >= 6 else None,
        "country": country,
        "preferredLanguage": lang if b29 & 8 else None,
        "userType": "Member",
    }


def generate_users(count: int, seed: int, start: int = 0) -> Iterator[dict[str, Any]]:
    """Users ``start … start+count-1``, lazily (iterate; nothing is kept)."""
    for i in range(start, start + count):
        yield generate_user(i, seed)
