"""bulkprov: fast, resumable provisioning from Microsoft Entra ID (Graph) into SCIM 2.0.

The public API is what ``__all__`` lists (``tests/test_public_api.py`` holds it to that):
load a config, read its secrets, run a sync, and the one exception tree. Everything else is
reached through its module and may change; the command line is ``bulkprov`` (bulkprov.cli).

::

    import anyio, bulkprov

    cfg = bulkprov.load_config("bulkprov.toml")
    result = anyio.run(bulkprov.run_sync, cfg, bulkprov.Secrets.from_config(cfg))

The layers of the package, top to bottom (an import points down only; ``scripts/check``
holds them with import-linter, see ``[tool.importlinter]`` in pyproject.toml)::

    cli → commands → observe → pipeline → checkpoint | graph | scope → mapping → scim
        → credentials → config → transport | retry | breaker | escrow
        → redact | errors | _json
    sim/ (the simulators) imports nothing above scim/graph/mapping; only commands/demo and
    commands/sim import it.

Names are imported on first use, so ``import bulkprov.errors`` (or the CLI's ``--help``)
does not load the pipeline, pydantic or httpx.
"""

# (no ``from __future__ import annotations`` and private aliases only: every public name of
# this module is in ``__all__``, tests/test_public_api.py)
import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from bulkprov.config import Config, load_config, parse_config
    from bulkprov.credentials import Secrets
    from bulkprov.errors import (
        BulkProvError,
        ConfigError,
        CutoverRefused,
        DeltaExpired,
        MappingError,
        OutcomeUnknown,
        PendingInvitation,
        PlanStale,
        Quarantined,
        RunAborted,
        SourceAuthError,
        SourceError,
        SourceTLSError,
        StateError,
        TargetAuthError,
        TargetDailyLimit,
        TargetError,
        TargetProxyError,
        TargetRejected,
        TargetStop,
        TargetThrottled,
        TargetTLSError,
        TargetUnavailable,
        UserDataError,
    )
    from bulkprov.mapping import ExpressionSyntaxError
    from bulkprov.pipeline import Engine, RunResult, RunStats, run_sync

#: public name → the module it lives in; every other name of ``__all__`` is an error of the
#: tree, from bulkprov.errors (tests/test_public_api.py imports each one)
_WHERE = {
    "Config": "bulkprov.config",
    "load_config": "bulkprov.config",
    "parse_config": "bulkprov.config",
    "Secrets": "bulkprov.credentials",
    "Engine": "bulkprov.pipeline",
    "RunResult": "bulkprov.pipeline",
    "RunStats": "bulkprov.pipeline",
    "run_sync": "bulkprov.pipeline",
    "ExpressionSyntaxError": "bulkprov.mapping",
}

__all__ = [
    "BulkProvError",
    "Config",
    "ConfigError",
    "CutoverRefused",
    "DeltaExpired",
    "Engine",
    "ExpressionSyntaxError",
    "MappingError",
    "OutcomeUnknown",
    "PendingInvitation",
    "PlanStale",
    "Quarantined",
    "RunAborted",
    "RunResult",
    "RunStats",
    "Secrets",
    "SourceAuthError",
    "SourceError",
    "SourceTLSError",
    "StateError",
    "TargetAuthError",
    "TargetDailyLimit",
    "TargetError",
    "TargetProxyError",
    "TargetRejected",
    "TargetStop",
    "TargetTLSError",
    "TargetThrottled",
    "TargetUnavailable",
    "UserDataError",
    "load_config",
    "parse_config",
    "run_sync",
]


def __getattr__(name: str) -> _typing.Any:
    if name not in __all__:
        raise AttributeError(f"module 'bulkprov' has no attribute {name!r}")
    module = _importlib.import_module(_WHERE.get(name, "bulkprov.errors"))
    value = getattr(module, name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
