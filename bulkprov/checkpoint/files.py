"""The files bulkprov writes that hold directory data: mode 0600, their folders 0700.

The state database holds the names, emails and departments of the whole tenant, and so do
the files made from it: the run reports and their samples, ``plan.json``, the log's CSV
export, a ``state export`` copy. Each is created (or truncated, or appended to) through
:func:`open_private` or :func:`write_private`, which set the mode with ``fchmod`` rather
than trusting the umask (a umask of 022 would give 0644, one of 0 would give 0666, one of
0277 a file the owner cannot write), and each folder bulkprov creates for them through
:func:`private_dir`. A file that already exists with a looser mode is tightened when it is
written again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

#: the mode of every file bulkprov writes that holds directory data
PRIVATE_FILE = 0o600
#: the mode of every folder bulkprov creates for such files
PRIVATE_DIR = 0o700


def private_dir(path: Path, *, own: bool = False) -> Path:
    """Create ``path`` and its missing parents with mode 0700; return it.

    ``own``: the folder is bulkprov's own (the reports folder beside the state database),
    so one that exists with a looser mode is tightened too. A folder the user named
    (``logs --csv DIR``, the state database's folder) that already exists is left as it is.
    """
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:  # made meanwhile (another process): keep its mode
            continue
        os.chmod(folder, PRIVATE_DIR)  # the umask may have taken bits off (or left group's)
    if own and path.is_dir() and (path.stat().st_mode & 0o777) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)
    return path


def open_private(
    path: Path, mode: str = "w", *, encoding: str = "utf-8", newline: str | None = None
) -> IO[str]:
    """Open ``path`` for writing text (``"w"`` truncates, ``"a"`` appends), mode 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        return os.fdopen(fd, mode, encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) all at once: through a temporary file beside
    it and a rename, so a reader never sees half of it and an interrupted write leaves the
    old file."""
    tmp = path.with_name(path.name + ".tmp")
    with open_private(tmp) as f:
        f.write(text)
    os.replace(tmp, path)


def tighten(path: Path) -> None:
    """Make an existing file bulkprov owns mode 0600 (a state database copied with ``cp``
    keeps the copier's umask; SQLite gives its -wal and -shm files the database's mode)."""
    if (path.stat().st_mode & 0o777) != PRIVATE_FILE:
        os.chmod(path, PRIVATE_FILE)
