"""Run ``python -m MODULE ARGS…`` and write the process's own peak RSS to ``$BENCH_PEAK_FILE``.

``wait4``'s ``ru_maxrss`` is no good for a child of the benchmark harness: Linux folds the
high-water mark of the address space a process had before ``exec`` — the harness's own,
copied by ``fork`` (≈ 70 MB here) — into the child's figure. ``VmHWM`` in
``/proc/self/status`` belongs to the address space ``exec`` made, so it is the child's
alone; this wrapper reads it at exit.

    BENCH_PEAK_FILE=/tmp/x python -m benchmarks._peak bulkprov sync -c bench.toml
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys


def _write_peak() -> None:
    path = os.environ.get("BENCH_PEAK_FILE")
    if not path:
        return
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                kib = int(line.split()[1])
                with open(path, "w", encoding="ascii") as out:
                    out.write(str(kib))
                return


def main() -> None:
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    atexit.register(_write_peak)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
