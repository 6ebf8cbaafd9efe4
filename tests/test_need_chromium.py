"""scripts/need-chromium (run by scripts/test): a missing Chromium is installed with apt-get
when root, and otherwise named in one line with a non-zero exit; never skipped silently.

The machine's own Chromium and apt-get are never touched: the script runs with a PATH of
stand-ins (an `id` that says who we are, an `apt-get` that records its arguments)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "need-chromium"


def _bin(tmp_path: Path, *, uid: int, apt_installs: bool | None) -> Path:
    """A PATH directory with bash, a stand-in `id`, and (unless None) a stand-in apt-get."""
    bash = shutil.which("bash")
    assert bash is not None
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "bash").symlink_to(bash)
    scripts = {"id": f'[ "$1" = -u ] && echo {uid}\n'}
    if apt_installs is not None:
        chmod = shutil.which("chmod")
        install = f": > {bin_}/chromium; {chmod} +x {bin_}/chromium" if apt_installs else ""
        scripts["apt-get"] = (
            f'echo "$DEBIAN_FRONTEND apt-get $*" >> {tmp_path}/apt.log\n'
            f'[ "$1" = install ] && {{ {install}:; }}\nexit 0\n'
        )
    for name, body in scripts.items():
        (bin_ / name).write_text(f"#!{bash}\n{body}")
        (bin_ / name).chmod(0o755)
    return bin_


def _run(bin_: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DEBIAN_FRONTEND"}
    return subprocess.run(
        [str(SCRIPT)],
        env={**env, "PATH": str(bin_)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_chromium_as_a_user_is_one_clear_line_and_a_failure(tmp_path):
    proc = _run(_bin(tmp_path, uid=1000, apt_installs=True))
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Chromium is missing" in lines[0] and "apt-get install chromium" in lines[0]
    assert not (tmp_path / "apt.log").exists()  # nothing was tried without root


def test_missing_chromium_as_root_is_installed_with_apt_get(tmp_path):
    bin_ = _bin(tmp_path, uid=0, apt_installs=True)
    proc = _run(bin_)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "noninteractive apt-get update -q",
        "noninteractive apt-get install -y -q chromium",
    ]
    # installed: the next run has nothing to do
    (tmp_path / "apt.log").unlink()
    assert _run(bin_).returncode == 0
    assert not (tmp_path / "apt.log").exists()


def test_root_without_a_chromium_after_apt_get_fails_and_says_so(tmp_path):
    proc = _run(_bin(tmp_path, uid=0, apt_installs=False))
    assert proc.returncode != 0
    assert "no 'chromium' is on PATH" in proc.stderr


def test_root_without_apt_get_says_what_to_install(tmp_path):
    proc = _run(_bin(tmp_path, uid=0, apt_installs=None))
    assert proc.returncode != 0
    assert "Chromium is missing" in proc.stderr


@pytest.mark.parametrize("name", ["chromium", "chromium-browser"])
def test_chromium_on_path_needs_nothing(tmp_path, name):
    bin_ = _bin(tmp_path, uid=1000, apt_installs=True)
    (bin_ / name).write_text("#!/bin/sh\n")
    (bin_ / name).chmod(0o755)
    proc = _run(bin_)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_scripts_test_runs_it_before_pytest():
    lines = [ln.strip() for ln in (SCRIPT.parent / "test").read_text().splitlines()]
    assert lines.index("scripts/need-chromium") < lines.index(
        'exec .venv/bin/python -m pytest "$@"'
    )
