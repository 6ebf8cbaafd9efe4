"""Is a path on a network filesystem? (The state database must not be.)

SQLite's own documentation: "SQLite depends on the underlying filesystem to do locking
[…]. But some filesystems contain bugs in their locking logic such that the locks do not
always behave as advertised. This is especially true of network filesystems and NFS in
particular", and WAL mode "does not work over a network filesystem" (its index is shared
memory, https://www.sqlite.org/wal.html, https://www.sqlite.org/useovernet.html). Two jobs on
one state over NFS or SMB can both believe they hold the lock and corrupt it; so
``load_config`` refuses a ``state.path`` on one unless ``state.allow_network_filesystem``.

On Linux the answer is the filesystem's type from ``statfs(2)`` (``f_type``, the magic
numbers of ``linux/magic.h``), asked of the path or, before it exists, of its nearest
existing folder. FUSE filesystems are not judged (sshfs and a local fuse-overlayfs share one
type); elsewhere than Linux the answer is "unknown", never a refusal.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

#: ``f_type`` → name, for the filesystems whose files live on another machine (or are
#: shared by several: cluster filesystems), from linux/magic.h and the filesystems' sources
NETWORK_FILESYSTEMS = {
    0x6969: "nfs",
    0x517B: "smb",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x5346414F: "afs",
    0x6B414653: "kafs",
    0x73757245: "coda",
    0x00C36400: "ceph",
    0x01021997: "9p",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
    0x7461636F: "ocfs2",
    0x01161970: "gfs2",
    0x013111A8: "ibrix",
    0x564C: "ncp",
}


def filesystem_type(path: Path) -> int | None:
    """``statfs(2)``'s ``f_type`` for ``path`` (or its nearest existing folder); ``None``
    where it cannot be asked (not Linux, no libc, an error)."""
    if not sys.platform.startswith("linux"):
        return None
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        statfs = libc.statfs
    except (OSError, AttributeError):
        return None
    # struct statfs begins with ``__fsword_t f_type`` (a long) on every Linux ABI that
    # Python runs on but s390x; the buffer is larger than the struct (120 bytes on x86-64)
    buf = ctypes.create_string_buffer(512)
    if statfs(os.fsencode(probe), buf) != 0:
        return None
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def network_filesystem(path: Path) -> str | None:
    """The name of the network filesystem ``path`` is on, or ``None`` (local or unknown)."""
    kind = filesystem_type(path)
    return NETWORK_FILESYSTEMS.get(kind) if kind is not None else None
