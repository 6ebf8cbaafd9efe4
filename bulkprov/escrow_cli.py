"""The state commands behind ``bulkprov retry-failed`` and ``bulkprov state export``."""

from __future__ import annotations

from pathlib import Path

from bulkprov.checkpoint.lock import StateLock
from bulkprov.checkpoint.store import StateStore
from bulkprov.config import Config
from bulkprov.errors import StateError


async def release_escrow(cfg: Config) -> int:
    """Make every escrowed user due now; returns how many (under the sync lock)."""
    if not cfg.state.path.exists():
        return 0
    with StateLock(cfg.state.path):
        async with await StateStore.open(cfg.state.path) as store:
            return await store.release_escrow()


async def export_state(cfg: Config, dest: Path) -> None:
    """Online backup of the state database (a running sync may keep writing)."""
    if not cfg.state.path.exists():
        raise StateError(f"{cfg.state.path}: no state database to export")
    async with await StateStore.open(cfg.state.path) as store:
        await store.backup(dest)
