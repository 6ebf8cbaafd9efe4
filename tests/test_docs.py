"""The README's quick start runs verbatim; the docs match the code they describe."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bulkprov.cli import main
from bulkprov.commands.sim import sim_parser
from bulkprov.mapping.docgen import function_table

ROOT = Path(__file__).resolve().parent.parent


def fenced_blocks(section: str) -> list[list[str]]:
    """The commands of each fenced ``sh`` block under a README heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", body, flags=re.DOTALL)
    return [
        [line.split("#", 1)[0].strip() for line in b.splitlines() if line.split("#", 1)[0].strip()]
        for b in blocks
    ]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    (commands,) = fenced_blocks("Quick start")
    assert commands == ["scripts/demo", "scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "scripts/test" in [line.strip() for line in ci]  # exactly the README's command


@pytest.mark.slow
def test_quick_start_demo_runs_verbatim():
    """`scripts/demo` as the README gives it: 20,000 users, interrupted, resumed, checked."""
    (commands,) = fenced_blocks("Quick start")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKPROV_")}
    proc = subprocess.run(
        shlex.split(commands[0]),
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert "demo PASSED" in proc.stdout
    assert re.search(r"report: \S+run-\d+\.html", proc.stdout)


def _sh_commands(path: Path) -> list[str]:
    """Every command line of every fenced ``sh`` block in ``path`` (comments dropped)."""
    blocks = re.findall(r"```sh\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [
        line.split("#", 1)[0].strip()
        for b in blocks
        for line in b.splitlines()
        if line.split("#", 1)[0].strip()
    ]


@pytest.mark.parametrize(
    "doc", ["README.md", "docs/zoom-from-entra.md", "docs/mappings.md", "docs/deploy.md"]
)
def test_documented_commands_exist(doc):
    """Every `bulkprov …` command a document shows is a real command with those options."""
    for line in _sh_commands(ROOT / doc):
        for part in re.split(r"&&|\|", line):
            words = shlex.split(part)
            for stop in (">", ">>", "<"):
                if stop in words:
                    words = words[: words.index(stop)]
            if not words or words[0] != "bulkprov":
                continue
            cmd = main
            args = words[1:]
            while args and hasattr(cmd, "commands") and args[0] in cmd.commands:  # type: ignore[attr-defined]
                cmd = cmd.commands[args.pop(0)]  # type: ignore[attr-defined]
            assert cmd is not main, line
            if cmd.name == "sim":  # its arguments are the simulators' own (argparse)
                sim_parser().parse_args(args)  # exits on an unknown option (`bulkprov sim`'s)
                continue
            cmd.make_context("bulkprov", list(args), resilient_parsing=True)  # parses, or raises
            known = {o for p in cmd.params for o in getattr(p, "opts", [])}
            for word in args:
                if word.startswith("-"):
                    assert word.split("=", 1)[0] in known, f"{doc}: {line}: {word}"


def test_mapping_reference_lists_every_function():
    text = (ROOT / "docs" / "mappings.md").read_text(encoding="utf-8")
    assert function_table() in text, "run `python -m bulkprov.mapping.docgen` and paste the table"


def test_docs_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in ("docs/zoom-from-entra.md", "docs/mappings.md", "docs/deploy.md"):
        assert f"({doc})" in readme
        assert (ROOT / doc).exists()


def test_guide_answers_every_common_issue_of_the_admin_guide():
    guide = (ROOT / "docs" / "zoom-from-entra.md").read_text(encoding="utf-8")
    issues = [
        "Request is unparsable",
        "Users provisioned but can't sign in",
        "License changes not syncing",
        "Deprovisioned user still active in Zoom",
        "Duplicate users in Zoom",
        "SCIM token expired",
        "Group sync not working",
        "Too many users provisioned",
    ]
    section = guide.split("## Common issues", 1)[1]
    for issue in issues:
        assert f"**{issue}" in section or f'**"{issue}' in section, issue


# -- docs/deploy.md (issue 15): its commands and examples, run or checked here -------------

DEPLOY = ROOT / "docs" / "deploy.md"


def test_the_completion_line_installs_a_completion(tmp_path):
    """The one documented line, run in a fresh bash with this checkout's bulkprov."""
    (line,) = [x for x in _sh_commands(DEPLOY) if "_BULKPROV_COMPLETE" in x]
    assert line in _sh_commands(ROOT / "README.md")
    rc = tmp_path / ".bashrc"
    home = dict(
        os.environ, HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )
    subprocess.run(["bash", "-c", line], env=home, check=True, timeout=60)
    out = subprocess.run(
        ["bash", "-c", f"source {rc} && complete -p bulkprov"],
        env=home, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert "_bulkprov_completion" in out.stdout


def test_the_environment_table_names_real_keys(tmp_path, monkeypatch):
    """Every BULKPROV_<SECTION>__<KEY> of the table sets the key it says (the starter config
    loaded with it), and the documented precedence holds."""
    from bulkprov.commands.starter import STARTER_TOML
    from bulkprov.config import load_config

    config = tmp_path / "bulkprov.toml"
    config.write_text(STARTER_TOML)
    text = DEPLOY.read_text(encoding="utf-8")
    section = text.split("## Configuration from the environment", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(BULKPROV_\w+)=(.*?)` \| (.*?) \|$", section, flags=re.MULTILINE)
    assert len(rows) >= 6
    for name, value, _ in rows:
        monkeypatch.setenv(name, value.strip("'"))
    monkeypatch.setenv("CONTOSO_SECRET", "s")
    cfg = load_config(config)
    assert cfg.target.rate_limit == 30 and cfg.deprovision.threshold == 50
    assert str(cfg.target.token.file) == "/run/secrets/scim-token"
    assert cfg.graph.client_secret.env == "CONTOSO_SECRET"
    assert cfg.escrow.delays_hours == [1, 6, 24] and cfg.network.proxy == "http://proxy:3128"
    assert str(cfg.state.path) == "/var/lib/bulkprov/state.sqlite3"


def test_the_podman_commands_use_the_images_paths():
    """The documented `podman run` lines mount what the image expects (the container test,
    tests/test_container.py, runs the same)."""
    from bulkprov.config import Config
    from bulkprov.envconfig import env_overrides

    lines = [x for x in _sh_commands(DEPLOY) if x.startswith("podman run")]
    assert len(lines) >= 3
    for line in lines:
        words = shlex.split(line)
        assert "--read-only" in words
        assert any(w.endswith(":/var/lib/bulkprov") for w in words), line
        assert any(w.endswith(":/etc/bulkprov/bulkprov.toml:ro") for w in words), line
        env = dict(w.split("=", 1) for w in words if w.startswith("BULKPROV_") and "__" in w)
        env_overrides(Config, environ=env)  # real keys, or a ConfigError
    containerfile = (ROOT / "deploy" / "container" / "Containerfile").read_text()
    assert 'VOLUME ["/var/lib/bulkprov"]' in containerfile
    assert "BULKPROV_CONFIG=/etc/bulkprov/bulkprov.toml" in containerfile


def test_the_argo_example_queues_one_zoom_account():
    """The CronWorkflow's semaphore names a key the ConfigMap gives a limit of one."""
    import yaml

    block = re.search(r"```yaml\n(.*?)```", DEPLOY.read_text(encoding="utf-8"), re.DOTALL)
    assert block is not None
    config_map, workflow = list(yaml.safe_load_all(block.group(1)))
    ref = workflow["spec"]["workflowSpec"]["synchronization"]["semaphore"]["configMapKeyRef"]
    assert ref["name"] == config_map["metadata"]["name"]
    assert config_map["data"][ref["key"]] == "1"
    assert workflow["spec"]["concurrencyPolicy"] == "Forbid"
