"""deploy/: the Kubernetes manifests, the systemd units and the Prometheus rules, checked
offline (issue 15 items 2, 3, 4), and SIGTERM for bulkprov as a container's PID 1."""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from bulkprov.cli import main
from bulkprov.config import load_config
from bulkprov.mapping import compile_mappings
from bulkprov.observe.health import render_metrics
from bulkprov.observe.metrics import render
from bulkprov.pipeline import RunStats

from .cli_support import Cli, cli_fixture  # noqa: F401 - the `cli` fixture
from .conftest import GRAPH_SECRET, SCIM_TOKEN
from .kustomize import render as kustomize

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
PROMETHEUS = ROOT / "deploy" / "prometheus"
#: the oldest Kubernetes still in its makers' support when this was written, and the newest
#: whose schemas kubernetes-validate bundles
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
PAIRS = ("contoso-zoom", "fabrikam-zoom", "fabrikam-scim")


def manifests() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def validate(obj: dict, where: str) -> None:
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where} ({obj['kind']}) against {version}: {exc}") from None


@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_validates_against_the_kubernetes_schemas(path):
    """Offline, strict (an unknown field is an error), for the oldest and newest versions."""
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert docs
    for doc in docs:
        validate(doc, str(path.relative_to(ROOT)))


def test_the_validator_refuses_a_misspelt_field():
    cronjob = yaml.safe_load((K8S / "base" / "cronjob.yaml").read_text())
    bad = copy.deepcopy(cronjob)
    bad["spec"]["concurrencyPolcy"] = bad["spec"].pop("concurrencyPolicy")
    with pytest.raises(AssertionError, match="concurrencyPolcy"):
        validate(bad, "bad")


@pytest.fixture(name="k8s")
def k8s_fixture(tmp_path: Path) -> Path:
    """deploy/kubernetes/ copied, with the secret files an admin writes (never committed)."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(K8S, tree)
    for pair in PAIRS:
        secrets = tree / "overlays" / "msp" / pair / "secrets"
        secrets.mkdir()
        (secrets / "graph-client-secret").write_text(f"graph-secret-of-{pair}\n")
        (secrets / "scim-token").write_text(f"scim-token-of-{pair}\n")
    return tree


def pod_spec(cronjob: dict) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_the_base_cronjob_runs_one_job_safely():
    (pvc,) = yaml.safe_load_all((K8S / "base" / "pvc.yaml").read_text())
    cronjob = yaml.safe_load((K8S / "base" / "cronjob.yaml").read_text())
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] <= 3600
    assert 0 <= spec["jobTemplate"]["spec"]["backoffLimit"] <= 6
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = pod_spec(cronjob)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes[mounts["/var/lib/bulkprov"]]["persistentVolumeClaim"]["claimName"]
        == (pvc["metadata"]["name"])
    )
    assert "secret" in volumes[mounts["/run/secrets/bulkprov"]]
    assert "configMap" in volumes[mounts["/etc/bulkprov"]]
    env = {e["name"]: e["value"] for e in container["env"]}
    for path in env.values():  # the secrets' files are where the Secret is mounted
        assert path.startswith("/run/secrets/bulkprov/")
    assert container["args"][0] == "sync"
    main.commands["sync"].make_context("sync", list(container["args"][1:]))  # real options


def test_the_watch_deployment_has_one_pod_metrics_and_probes():
    docs = {
        d["kind"]: d
        for f in ("deployment.yaml", "service.yaml", "pvc.yaml")
        for d in yaml.safe_load_all((K8S / "watch" / f).read_text())
    }
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two pods on a state
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "sync"
    ctx = main.commands["sync"].make_context("sync", list(container["args"][1:]))
    assert ctx.params["watch"] is True
    port = ctx.params["metrics_port"]
    assert ctx.params["metrics_host"] == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[:3] == ["bulkprov", "status", "--check"]
    ctx = main.commands["status"].make_context("status", probe[2:])
    assert ctx.params["check"] and ctx.params["max_age"] == "2h"
    assert docs["Service"]["spec"]["publishNotReadyAddresses"] is True
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_overlay_renders_one_cronjob_and_claim_per_pair(k8s, tmp_path):
    """Rendered in Python (tests/kustomize.py); every object validates; each pair has its
    own CronJob, claim, ConfigMap and Secret, named after it, and nothing is shared."""
    objects = kustomize(k8s / "overlays" / "msp")
    for obj in objects:
        validate(obj, f"overlays/msp: {obj['metadata']['name']}")
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "bulkprov"
    assert set(by_kind["CronJob"]) == {f"bulkprov-{p}" for p in PAIRS}
    assert set(by_kind["PersistentVolumeClaim"]) == {f"bulkprov-state-{p}" for p in PAIRS}
    schedules = set()
    for pair in PAIRS:
        cronjob = by_kind["CronJob"][f"bulkprov-{pair}"]
        labels = cronjob["metadata"]["labels"]
        assert f"{labels['bulkprov.io/tenant']}-{labels['bulkprov.io/target']}" == pair
        schedules.add(cronjob["spec"]["schedule"])
        pod = pod_spec(cronjob)
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["state"]["persistentVolumeClaim"]["claimName"] == f"bulkprov-state-{pair}"
        assert volumes["config"]["configMap"]["name"] == f"bulkprov-config-{pair}"
        assert volumes["secrets"]["secret"]["secretName"] == f"bulkprov-secrets-{pair}"
        assert pod["containers"][0]["image"] == "registry.example.com/identity/bulkprov:0.1.0"
        secret = by_kind["Secret"][f"bulkprov-secrets-{pair}"]
        assert set(secret["data"]) == {"graph-client-secret", "scim-token"}
        # each pair's config is a valid bulkprov config whose mappings compile
        config = tmp_path / f"{pair}.toml"
        config.write_text(by_kind["ConfigMap"][f"bulkprov-config-{pair}"]["data"]["bulkprov.toml"])
        compile_mappings(load_config(config).mappings)
    assert len(schedules) == len(PAIRS)  # spread over the hour


def kustomize_binary() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def canonical(objects: list[dict]) -> list[dict]:
    return sorted(objects, key=lambda o: (o["kind"], o["metadata"]["name"]))


@pytest.mark.parametrize("folder", ["overlays/msp", "base", "watch"])
def test_the_python_rendering_is_kustomizes(k8s, folder):
    """Where a kustomize binary is available (kubectl has one built in), it renders exactly
    the objects tests/kustomize.py renders."""
    binary = kustomize_binary()
    if binary is None:
        pytest.skip("no kustomize or kubectl binary: the Python rendering stands alone")
    out = subprocess.run(
        [*binary, str(k8s / folder)], capture_output=True, text=True, check=True, timeout=120
    )
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert canonical(theirs) == canonical(kustomize(k8s / folder))


# -- systemd -------------------------------------------------------------------------------


def unit_lines(name: str) -> list[tuple[str, str]]:
    lines = []
    for raw in (SYSTEMD / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            lines.append((key, value))
    return lines


def test_the_service_is_sandboxed_and_takes_its_config_and_secrets_as_credentials():
    keys = unit_lines("bulkprov@.service")
    values = dict(keys)
    assert values["DynamicUser"] == "yes"
    assert values["ProtectSystem"] == "strict"
    assert values["StateDirectory"] == "bulkprov/%i"
    credentials = [v.split(":", 1)[0] for k, v in keys if k == "LoadCredential"]
    assert credentials == ["bulkprov.toml", "graph-client-secret", "scim-token"]
    env = dict(v.split("=", 1) for k, v in keys if k == "Environment")
    assert env["BULKPROV_CONFIG"] == "%d/bulkprov.toml"
    assert env["BULKPROV_STATE__PATH"].startswith("%S/bulkprov/%i/")
    timer = dict(unit_lines("bulkprov@.timer"))
    assert timer["WantedBy"] == "timers.target"


def test_systemd_analyze_verifies_the_units(tmp_path):
    """`systemd-analyze verify` (where systemd is installed): no error and no warning. Its
    ExecStart must exist, so the copy verified runs this checkout's bulkprov."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit checks above stand alone")
    bulkprov = Path(sys.executable).with_name("bulkprov")
    assert bulkprov.exists()
    service = (
        (SYSTEMD / "bulkprov@.service")
        .read_text()
        .replace("/usr/local/bin/bulkprov", str(bulkprov))
    )
    (tmp_path / "bulkprov@.service").write_text(service)
    shutil.copy(SYSTEMD / "bulkprov@.timer", tmp_path)
    proc = subprocess.run(
        [analyze, "verify", "--man=no", "./bulkprov@contoso-zoom.service",
         "./bulkprov@contoso-zoom.timer"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    # and it bites: a misspelt setting is reported
    (tmp_path / "bulkprov@.service").write_text(service.replace("ProtectSystem=", "ProtectSytem="))
    bad = subprocess.run(
        [analyze, "verify", "--man=no", "./bulkprov@contoso-zoom.service"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert "ProtectSytem" in bad.stderr


def test_the_services_environment_syncs(cli: Cli, tmp_path):
    """The unit's Environment= and ExecStart= with systemd's specifiers filled in as it
    would (%d the credentials, %S /var/lib, %i the instance): a sync, then a healthy check,
    with the config and secrets read from the credential files only."""
    creds, var_lib = tmp_path / "credentials", tmp_path / "var-lib"
    creds.mkdir()
    (creds / "bulkprov.toml").write_text(cli.config.read_text())
    (creds / "graph-client-secret").write_text(GRAPH_SECRET)
    (creds / "scim-token").write_text(SCIM_TOKEN)
    keys = unit_lines("bulkprov@.service")

    def fill(value: str) -> str:
        return (
            value.replace("%d", str(creds))
            .replace("%S", str(var_lib))
            .replace("%i", "contoso-zoom")
        )

    env = {k: fill(v) for k, v in (v.split("=", 1) for key, v in keys if key == "Environment")}
    (var_lib / "bulkprov" / "contoso-zoom").mkdir(parents=True)  # StateDirectory=
    command = shlex.split(dict(keys)["ExecStart"])
    assert command[0] == "/usr/local/bin/bulkprov"
    # no BULKPROV_GRAPH_SECRET / BULKPROV_SCIM_TOKEN: the files must be what is read
    env |= {"BULKPROV_GRAPH_SECRET": "", "BULKPROV_SCIM_TOKEN": ""}
    result = CliRunner().invoke(main, command[1:], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    state = var_lib / "bulkprov" / "contoso-zoom" / "state.sqlite3"
    assert state.exists() and not cli.state.exists()
    check = CliRunner().invoke(main, ["status", "--check", "--max-age", "2h"], env=env)
    assert check.exit_code == 0, check.output


# -- Prometheus ------------------------------------------------------------------------------


def exposed_metrics() -> set[str]:
    text = render(RunStats(), 0.0) + "\n".join(render_metrics(None))
    return set(re.findall(r"^# TYPE (\w+) ", text, flags=re.MULTILINE))


def test_the_alert_rules_are_well_formed_and_watch_real_metrics():
    """Parsed and checked here whether or not promtool is available."""
    doc = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"BulkprovNoSuccessfulCycle", "BulkprovActionsHeld", "BulkprovQuarantined"} <= names
    metrics = exposed_metrics()
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        used = set(re.findall(r"\bbulkprov_\w+", rule["expr"]))
        assert used and used <= metrics, (rule["alert"], used - metrics)
    assert "time() - bulkprov_last_success_timestamp_seconds > 2 * 3600" in {
        r["expr"] for r in rules
    }


def promtool() -> str | None:
    """promtool (Debian's `prometheus` package), installed with apt-get when root."""
    found = shutil.which("promtool")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q",
                    "--no-install-recommends", "prometheus"]):  # fmt: skip
            subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=600)
        found = shutil.which("promtool")
    return found


def test_promtool_checks_and_unit_tests_the_rules():
    """`promtool check rules` and `promtool test rules` (each alert fires when it should,
    and only then: deploy/prometheus/alerts.test.yaml)."""
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installable here: the parsed checks above stand alone")
    for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts.test.yaml"]):
        proc = subprocess.run(
            [tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout


# -- SIGTERM as PID 1 ---------------------------------------------------------------------


def test_sigterm_stops_a_watch_loop_that_is_pid_1(cli: Cli):
    """In a container bulkprov is PID 1, to which the kernel applies no default action:
    SIGTERM between two `--watch` cycles was ignored, and `podman stop` or a pod's deletion
    waited out the grace period to SIGKILL it. Here the loop runs as PID 1 of a new PID
    namespace (unshare, as root) and must stop within seconds of SIGTERM."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root for a PID namespace")
    env = dict(os.environ, BULKPROV_GRAPH_SECRET=GRAPH_SECRET, BULKPROV_SCIM_TOKEN=SCIM_TOKEN)
    command = [sys.executable, "-m", "bulkprov", "sync", "--watch", "--interval", "1h"]
    proc = subprocess.Popen(
        [unshare, "--pid", "--fork", "--kill-child", *command, "--quiet", "-c", str(cli.config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        child = None
        while time.monotonic() < deadline:  # the first cycle done: it waits for the next
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            if children.exists() and children.read_text().split():
                child = int(children.read_text().split()[0])
            if cli.state.exists() and _completed(cli.state):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert child is not None and _completed(cli.state)
        os.kill(child, signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "between cycles" in err, err


def _completed(state: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as con:
            return bool(con.execute("SELECT 1 FROM runs WHERE status='completed'").fetchone())
    except sqlite3.Error:
        return False
