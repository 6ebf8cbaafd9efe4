"""Config keys from the environment: ``BULKPROV_<SECTION>__<KEY>`` over the TOML file.

For containers, Kubernetes and systemd units, where a mounted file is shared by many jobs
and one value differs per job (the state path, the rate limit, where a secret's file is
mounted). The config file stays the main way; an environment variable overrides one key:

    BULKPROV_STATE__PATH=/var/lib/bulkprov/state.sqlite3     →  [state] path
    BULKPROV_TARGET__RATE_LIMIT=30                           →  [target] rate_limit
    BULKPROV_TARGET__TOKEN__FILE=/run/secrets/scim-token     →  [target.token] file
    BULKPROV_ESCROW__DELAYS_HOURS='[1, 6, 24]'               →  a list, as JSON
    BULKPROV_NETWORK='{"proxy": "http://proxy:3128"}'        →  a whole section, as JSON

Names are case-insensitive; ``__`` separates the levels. Precedence, highest first: a
command-line option (``--config``, ``--metrics-port``), then the environment, then the
file, then the defaults. A secret's source (``{env = …}`` or ``{file = …}``) given in the
environment replaces the file's rather than merging with it (exactly one is allowed).

pydantic-settings reads and splits the variables (prefix, nested delimiter, JSON for lists
and sections); this module only merges its result over the file's table before the one
validation (:func:`bulkprov.config.parse_config`), so a bad value gets the same message as in
the file, with the variable named. Variables with one underscore (``BULKPROV_SCIM_TOKEN``,
``BULKPROV_CONFIG``) are not config keys and are left alone.

It knows nothing of bulkprov's sections: the model to read them for is the caller's, so
this module sits below :mod:`bulkprov.config` in the layers.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from pydantic import BaseModel, TypeAdapter, ValidationError, create_model
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError

from bulkprov.errors import ConfigError

PREFIX = "BULKPROV_"
DELIMITER = "__"


def env_overrides(
    model: type[BaseModel],
    *,
    environ: Mapping[str, str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], dict[str, str]]:
    """The config keys the environment sets for ``model``'s sections.

    Returns the nested table (scalars converted to the field's bool/int/float when they
    parse as one, so a strict model accepts them) and, for messages, which variable set
    each key (``"target.rate_limit" → "BULKPROV_TARGET__RATE_LIMIT"``). A variable naming
    no section of ``model`` is a :class:`~bulkprov.errors.ConfigError` (a typo must not be
    ignored in silence); an unknown key inside a section is left for the model's
    validation to name.
    """
    env = os.environ if environ is None else environ
    sections = {name for name in model.model_fields if name not in exclude}
    origins: dict[str, str] = {}
    for name in env:
        if not name.upper().startswith(PREFIX):
            continue
        rest = name[len(PREFIX) :].lower()
        section = rest.split(DELIMITER, 1)[0]
        if DELIMITER not in rest and section not in sections:
            continue  # BULKPROV_SCIM_TOKEN, BULKPROV_CONFIG: not config keys
        if section not in sections:
            raise ConfigError(
                f"no config section {section!r} (sections: {', '.join(sorted(sections))})",
                key=name,
            )
        origins[".".join(rest.split(DELIMITER))] = name
    if not origins:
        return {}, {}
    fields: dict[str, Any] = {
        name: (field.annotation, None)
        for name, field in model.model_fields.items()
        if name in sections
    }
    layer = create_model("EnvLayer", __base__=BaseSettings, **fields)
    layer.model_config = SettingsConfigDict(extra="ignore")
    source = EnvSettingsSource(
        layer, env_prefix=PREFIX, env_nested_delimiter=DELIMITER, case_sensitive=False
    )
    if environ is not None:
        source.env_vars = {k.lower(): v for k, v in environ.items()}
    try:
        data = source()
    except SettingsError as exc:
        # "error parsing value for field "escrow" from source "EnvSettingsSource"": a list
        # or section that is not JSON
        field = str(exc).split('"')[1] if '"' in str(exc) else ""
        names = sorted(v for k, v in origins.items() if k.split(".")[0] == field) or sorted(
            origins.values()
        )
        raise ConfigError(
            "not valid JSON (a list or a whole section is given as JSON, "
            "e.g. '[1, 6, 24]' or '{\"key\": \"value\"}')",
            key=", ".join(names),
        ) from None
    return _typed(model, data), origins


def merge(
    base: dict[str, Any],
    over: Mapping[str, Any],
    model: type[BaseModel],
    *,
    replace_whole: frozenset[type[BaseModel]] = frozenset(),
) -> dict[str, Any]:
    """``base`` with ``over`` laid on it: tables merge key by key, anything else replaces,
    and so does a table whose model is in ``replace_whole`` (a secret's source: ``{env}``
    or ``{file}``, exactly one, so the environment's choice replaces the file's)."""
    out = dict(base)
    for key, value in over.items():
        sub = _submodel(model, key)
        if (
            isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and sub is not None
            and sub not in replace_whole
        ):
            out[key] = merge(out[key], value, sub, replace_whole=replace_whole)
        else:
            out[key] = value
    return out


def _unwrap(annotation: Any) -> list[Any]:
    """The types an annotation allows (``X | None`` → [X]; ``Annotated[X, …]`` → [X])."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                out += _unwrap(arg)
        return out
    return [annotation]


def _submodel(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    field = model.model_fields.get(key)
    if field is None:
        return None
    for t in _unwrap(field.annotation):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _typed(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Convert the environment's strings to the field's scalar type where they parse as it
    (``"8"`` → 8, ``"true"`` → True); anything else is left for the model to judge."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        sub = _submodel(model, key)
        if isinstance(value, dict) and sub is not None:
            out[key] = _typed(sub, value)
        elif isinstance(value, str) and field is not None:
            out[key] = _scalar(field.annotation, value)
        else:
            out[key] = value
    return out


def _scalar(annotation: Any, value: str) -> Any:
    """The string as the field's bool, int or float (read leniently: ``"true"``, ``"8"``),
    so that a strict field, which takes no string, accepts it; else the string, for the
    model to judge (and name)."""
    kinds = [t for t in _unwrap(annotation) if t in (bool, int, float)]
    if not kinds or str in _unwrap(annotation):
        return value
    try:
        return TypeAdapter(kinds[0]).validate_python(value)
    except ValidationError:
        return value
