"""Config keys from BULKPROV_<SECTION>__<KEY> environment variables (issue 15 item 5), and
the refusal of a state path on a network filesystem (issue 15 item 6)."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from bulkprov import netfs
from bulkprov.commands.starter import STARTER_TOML
from bulkprov.config import Config, load_config
from bulkprov.envconfig import env_overrides
from bulkprov.errors import ConfigError


@pytest.fixture(name="config")
def config_fixture(tmp_path: Path) -> Path:
    p = tmp_path / "etc" / "zoom.toml"
    p.parent.mkdir()
    p.write_text(STARTER_TOML, encoding="utf-8")
    return p


def test_every_kind_of_key_can_be_set(config, monkeypatch):
    """Scalars of every type, a nested secret source, a list and a whole section."""
    monkeypatch.setenv("BULKPROV_TARGET__RATE_LIMIT", "30")
    monkeypatch.setenv("BULKPROV_TARGET__CONCURRENCY", "4")
    monkeypatch.setenv("BULKPROV_TARGET__ADAPTIVE", "false")
    monkeypatch.setenv("bulkprov_target__patch_dialect", "entra")  # names are case-insensitive
    monkeypatch.setenv("BULKPROV_STATE__PATH", "/var/lib/bulkprov/state.sqlite3")
    monkeypatch.setenv("BULKPROV_ESCROW__DELAYS_HOURS", "[1, 6.5, 24]")
    monkeypatch.setenv("BULKPROV_NETWORK", '{"proxy": "http://proxy.corp.example:3128"}')
    monkeypatch.setenv("BULKPROV_GRAPH__TENANT_ID", "8f3c0e2a-5b1d-4c6e-9a7f-0d2b4e6f8a10")
    cfg = load_config(config)
    assert cfg.target.rate_limit == 30.0 and cfg.target.concurrency == 4
    assert cfg.target.adaptive is False and cfg.target.patch_dialect == "entra"
    assert cfg.state.path == Path("/var/lib/bulkprov/state.sqlite3")
    assert cfg.escrow.delays_hours == [1.0, 6.5, 24.0]
    assert cfg.network.proxy == "http://proxy.corp.example:3128"
    assert cfg.graph.tenant_id == "8f3c0e2a-5b1d-4c6e-9a7f-0d2b4e6f8a10"
    # the rest is still the file's
    assert cfg.target.base_url == "https://api.zoom.us/scim2"
    assert cfg.target.token.env == "BULKPROV_SCIM_TOKEN"


def test_the_scalars_are_typed_before_validation():
    """ "8" becomes 8 and "true" True by the field's type, so a strict config accepts them;
    a string field keeps a value that looks like a number."""
    env = {
        "BULKPROV_TARGET__CONCURRENCY": "8",
        "BULKPROV_TARGET__BULK": "true",
        "BULKPROV_QUARANTINE__MAX_RATIO": "0.25",
        "BULKPROV_GRAPH__CLIENT_ID": "12345",
        "BULKPROV_SCOPE__SERVICE_PRINCIPAL_ID": "42",
    }
    data, origins = env_overrides(Config, environ=env)
    assert data["target"] == {"concurrency": 8, "bulk": True}
    assert data["quarantine"] == {"max_ratio": 0.25}
    assert data["graph"] == {"client_id": "12345"}
    assert data["scope"] == {"service_principal_id": "42"}
    assert origins["target.concurrency"] == "BULKPROV_TARGET__CONCURRENCY"


def test_a_secret_file_from_the_environment_replaces_the_files_env(config, monkeypatch, tmp_path):
    """A mounted secret (Kubernetes, podman --secret, systemd credentials) is named by one
    variable; the file's `{ env = ... }` gives way instead of making two sources."""
    token = tmp_path / "scim-token"
    token.write_text("tok-mounted\n")
    monkeypatch.setenv("BULKPROV_TARGET__TOKEN__FILE", str(token))
    monkeypatch.delenv("BULKPROV_SCIM_TOKEN", raising=False)
    cfg = load_config(config)
    assert cfg.target.token.env is None and cfg.target.token.file == token
    assert cfg.target.token.read("target.token", None).get_secret_value() == "tok-mounted"


def test_precedence_environment_over_file_over_default(config, monkeypatch):
    text = config.read_text().replace("rate_limit = 60", "rate_limit = 45")
    config.write_text(text)
    assert load_config(config).target.rate_limit == 45
    assert load_config(config).target.max_attempts == 8  # the default
    monkeypatch.setenv("BULKPROV_TARGET__RATE_LIMIT", "20")
    monkeypatch.setenv("BULKPROV_TARGET__MAX_ATTEMPTS", "3")
    cfg = load_config(config)
    assert (cfg.target.rate_limit, cfg.target.max_attempts) == (20, 3)


def test_relative_paths_from_the_environment_resolve_like_the_files(config, monkeypatch):
    monkeypatch.setenv("BULKPROV_STATE__PATH", "state/zoom.sqlite3")
    assert load_config(config).state.path == config.parent / "state" / "zoom.sqlite3"


def test_the_old_one_underscore_variables_are_not_keys(config, monkeypatch):
    """BULKPROV_SCIM_TOKEN, BULKPROV_GRAPH_SECRET, BULKPROV_CONFIG keep their meaning."""
    monkeypatch.setenv("BULKPROV_SCIM_TOKEN", "tok")
    monkeypatch.setenv("BULKPROV_GRAPH_SECRET", "sec")
    monkeypatch.setenv("BULKPROV_CONFIG", str(config))
    monkeypatch.setenv("BULKPROV_METRICS_PORT", "9464")
    assert env_overrides(Config, exclude=frozenset({"source_path"})) == ({}, {})
    load_config(config)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BULKPROV_TARGET__CONCURENCY", "8", "BULKPROV_TARGET__CONCURENCY"),
        ("BULKPROV_TARGET__CONCURRENCY", "many", "BULKPROV_TARGET__CONCURRENCY"),
        ("BULKPROV_TARGET__CONCURRENCY", "9999", "BULKPROV_TARGET__CONCURRENCY"),
        ("BULKPROV_TARGT__CONCURRENCY", "8", "no config section 'targt'"),
        ("BULKPROV_ESCROW__DELAYS_HOURS", "1,6,24", "BULKPROV_ESCROW__DELAYS_HOURS"),
    ],
    ids=["unknown-key", "not-an-int", "out-of-range", "unknown-section", "list-not-json"],
)
def test_a_bad_variable_is_named(config, monkeypatch, name, value, says):
    """A typo or a bad value is a config error (exit 2) naming the variable, never ignored."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert says in str(info.value)
    assert info.value.exit_code == 2


def test_a_secret_pasted_into_a_variable_is_in_no_traceback(config, monkeypatch):
    secret = "pasted-into-env-Qm4-never-shown"
    monkeypatch.setenv("BULKPROV_GRAPH__CLIENT_SECRET", secret)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "BULKPROV_GRAPH__CLIENT_SECRET" in str(caught.value)
    assert secret not in "".join(traceback.format_exception(caught.value))


# -- the state on a network filesystem (issue 15 item 6) ---------------------------------


def test_the_test_folder_is_on_a_local_filesystem(tmp_path):
    """The probe itself: statfs answers for a real path and for one not yet created."""
    kind = netfs.filesystem_type(tmp_path)
    assert kind is not None and kind not in netfs.NETWORK_FILESYSTEMS
    assert netfs.filesystem_type(tmp_path / "not" / "yet" / "state.sqlite3") == kind
    assert netfs.network_filesystem(tmp_path) is None


@pytest.mark.parametrize(("magic", "name"), [(0x6969, "nfs"), (0xFF534D42, "cifs")])
def test_a_state_on_a_network_filesystem_is_refused(config, monkeypatch, magic, name):
    """NFS (EFS, Filestore) and SMB (Azure Files): refused with the key to set, unless told."""
    monkeypatch.setattr(netfs, "filesystem_type", lambda path: magic)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    text = str(info.value)
    assert f"network filesystem ({name})" in text and "state.path" in text
    assert "state.allow_network_filesystem = true" in text
    monkeypatch.setenv("BULKPROV_STATE__ALLOW_NETWORK_FILESYSTEM", "true")
    assert load_config(config).state.allow_network_filesystem is True


async def test_run_sync_refuses_it_too(servers, tmp_path, monkeypatch):
    """A Config built in code (not through load_config) is checked when a sync starts,
    before anything is created."""
    from bulkprov.pipeline import run_sync

    from .conftest import SECRETS, make_config

    cfg = make_config(servers, tmp_path / "state.sqlite3")
    monkeypatch.setattr(netfs, "filesystem_type", lambda path: 0x6969)
    with pytest.raises(ConfigError, match="network filesystem"):
        await run_sync(cfg, SECRETS)
    assert list(tmp_path.iterdir()) == []
