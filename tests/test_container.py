"""The container image (issue 15 item 1): built as docs/deploy.md says, run as users run it.

deploy/container/build makes the wheels on the host and builds deploy/container/Containerfile
with podman on a base image made here from Debian's packages (no image registry is
reachable: facts.md §10). The image then syncs from the simulators on the host's loopback
(``--network host``) into a named volume, with a read-only root filesystem, as a non-root
user; it is killed mid-run (``podman kill``: SIGKILL), its HEALTHCHECK's command says so, a
second container on the same volume with the secrets as mounted files resumes it exactly
(every user once, nothing POSTed twice), and a ``sync --watch`` container reports healthy
and stops cleanly on SIGTERM.

The base image is cached in podman's storage (``localhost/bulkprov-test-base:bookworm``):
debootstrap (≈ 1 min) runs only when it is missing. Everything else this test makes (the
image, the containers, the volume) is named after its run and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from bulkprov.commands.demo import write_demo_config
from bulkprov.config import load_config
from bulkprov.sim.server import SimulatorProcess
from bulkprov.sim.users import generate_user

from .e2e import expected_values, store_problems

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BASE = "localhost/bulkprov-test-base:bookworm"
USERS = 3000
SEED = 15
TOKEN = "container-test-scim-token"
SECRET = "container-test-graph-secret"


def _podman_env(tmp_path: Path) -> dict[str, str]:
    """facts.md §10: no default ulimits (setrlimit fails on this kernel), runc not crun."""
    conf = tmp_path / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n", encoding="utf-8")
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return dict(os.environ, CONTAINERS_CONF=str(conf), PATH=path)


class Podman:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600, **kw
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args],
            env=kw.pop("env", self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kw,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}"
                f"\n{proc.stderr[-3000:]}"
            )
        return proc

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        return self("run", "--runtime", "runc", "--network", "host", *args, **kw)


def base_image(podman: Podman, tmp_path: Path) -> float:
    """The Debian base (python3, venv), made once and kept; returns the seconds it took."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return 0.0
    started = time.monotonic()
    rootfs = tmp_path / "rootfs"
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        ],
        env=podman.env,
        check=True,
        capture_output=True,
        timeout=900,
    )
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        podman("import", "-", BASE, stdin=tar.stdout)
    assert tar.returncode == 0
    shutil.rmtree(rootfs, ignore_errors=True)
    return time.monotonic() - started


def test_the_image_syncs_is_killed_and_a_second_container_resumes(tmp_path):
    need = subprocess.run(
        [str(ROOT / "scripts" / "need-podman")], capture_output=True, text=True, check=False
    )
    assert need.returncode == 0, need.stderr
    podman = Podman(_podman_env(tmp_path))
    timings: dict[str, float] = {"base": base_image(podman, tmp_path)}

    run_id = uuid.uuid4().hex[:10]
    image = f"localhost/bulkprov-test:{run_id}"
    volume = f"bulkprov-test-{run_id}"
    names = [f"bulkprov-test-{run_id}-{n}" for n in ("first", "second", "watch")]
    started = time.monotonic()
    build = subprocess.run(
        [str(ROOT / "deploy" / "container" / "build"), image],
        env=dict(podman.env, BASE=BASE, PYTHON_VERSION="3.11", PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    timings["build"] = time.monotonic() - started

    sim = SimulatorProcess(
        [
            *("--users", str(USERS), "--seed", str(SEED)),
            *("--scim-token", TOKEN, "--graph-secret", SECRET),
        ]
    )
    servers = sim.start()
    try:
        config = tmp_path / "bulkprov.toml"
        # the state path in the file is overridden by the image (BULKPROV_STATE__PATH)
        write_demo_config(config, sim.info, tmp_path / "unused.sqlite3", 8, 400, page_size=250)
        config.chmod(0o644)
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        (secrets / "graph-client-secret").write_text(SECRET + "\n")
        (secrets / "scim-token").write_text(TOKEN + "\n")
        for p in (secrets, *secrets.iterdir()):
            os.chown(p, 10001, 10001)  # the image's user; the files 0400 (no warning)
            p.chmod(0o400)
        secrets.chmod(0o500)
        podman("volume", "create", volume)
        common = [
            "--read-only",
            "-v",
            f"{volume}:/var/lib/bulkprov",
            "-v",
            f"{config}:/etc/bulkprov/bulkprov.toml:ro",
        ]
        env_secrets = ["--env", "BULKPROV_GRAPH_SECRET", "--env", "BULKPROV_SCIM_TOKEN"]
        secret_env = dict(podman.env, BULKPROV_GRAPH_SECRET=SECRET, BULKPROV_SCIM_TOKEN=TOKEN)
        control = servers.scim_control_url
        assert control is not None

        def created() -> int:
            return int(httpx.get(f"{control}/_sim/counters", trust_env=False).json()["users"])

        # 1. the first container, secrets from the environment; killed mid-run
        started = time.monotonic()
        podman.run(
            "-d", "--name", names[0], "--no-healthcheck", *common, *env_secrets, image,
            "sync", "--quiet",
            env=secret_env,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while created() < USERS // 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        at_kill = created()
        podman("kill", names[0])
        code = podman("wait", names[0]).stdout.strip()
        assert code == "137", f"the first container was not killed mid-run: exit {code}"
        assert USERS // 5 <= at_kill < USERS * 0.9, at_kill
        logs = podman("logs", names[0])
        assert SECRET not in logs.stdout + logs.stderr and TOKEN not in logs.stdout + logs.stderr

        # 2. the HEALTHCHECK's command on the volume: the killed run is found (exit 12)
        health = podman.run(
            "--rm", *common, image, "status", "--check", "--max-age", "2h", check=False
        )
        assert health.returncode == 12, health.stdout + health.stderr
        assert "stopped before its end" in health.stdout

        # 3. a second container, secrets as mounted files, resumes it to the end
        podman.run(
            "--name", names[1], "--no-healthcheck", *common,
            "-v", f"{secrets}:/run/secrets/bulkprov:ro",
            "-e", "BULKPROV_GRAPH__CLIENT_SECRET__FILE=/run/secrets/bulkprov/graph-client-secret",
            "-e", "BULKPROV_TARGET__TOKEN__FILE=/run/secrets/bulkprov/scim-token",
            image, "sync", "--quiet",
            timeout=300,
        )  # fmt: skip
        timings["sync"] = time.monotonic() - started

        store = httpx.get(f"{control}/_sim/store", trust_env=False, timeout=60).json()
        counters = httpx.get(f"{control}/_sim/counters", trust_env=False).json()
        cfg = load_config(config)
        expected = expected_values(cfg, (generate_user(i, SEED) for i in range(USERS)))
        assert len(expected) > USERS * 0.9
        assert store_problems(expected, store) == []
        assert counters["duplicate_posts"] == {}, "a userName was POSTed twice"

        mount = podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip()
        state = Path(mount) / "state.sqlite3"
        assert state.stat().st_uid == 10001  # written by the image's user, not root
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as con:
            runs = con.execute("SELECT status, resumes FROM runs").fetchall()
            linked = con.execute("SELECT count(*) FROM users WHERE scim_id IS NOT NULL")
            assert linked.fetchone()[0] == len(expected)
        assert runs == [("completed", 1)], runs  # one run, resumed once: exactly

        # 4. `sync --watch` with its HEALTHCHECK: healthy; SIGTERM stops it cleanly
        podman.run(
            "-d", "--name", names[2], *common, *env_secrets, image,
            "sync", "--watch", "--interval", "1h", "--quiet",
            env=secret_env,
        )  # fmt: skip
        check = podman("healthcheck", "run", names[2], check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        stopped = time.monotonic()
        podman("stop", "--time", "20", names[2])
        assert time.monotonic() - stopped < 15
        assert podman("wait", names[2]).stdout.strip() in ("0", "130")
    finally:
        sim.stop()
        podman("rm", "--force", *names, check=False)
        podman("volume", "rm", "--force", volume, check=False)
        podman("rmi", "--force", image, check=False)
        timings["total"] = sum(timings.values())
        print("container test timings (s):", {k: round(v, 1) for k, v in timings.items()})
