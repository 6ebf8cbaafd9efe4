"""Config loading: errors name the file and the key; secrets never leak."""

from __future__ import annotations

import pytest

from bulkprov.commands.starter import STARTER_TOML
from bulkprov.config import load_config
from bulkprov.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_starter_config_is_valid(tmp_path):
    cfg = load_config(write(tmp_path, STARTER_TOML))
    assert cfg.target.base_url == "https://api.zoom.us/scim2"
    assert [m.target for m in cfg.mappings][:2] == ["userName", 'emails[type eq "work"].value']
    assert cfg.mappings[-1].type == "expression"
    assert cfg.mappings[0].matching_precedence == 1


def test_starter_matches_default_mapping_table(tmp_path):
    from bulkprov.mapping.defaults import DEFAULT_ZOOM_MAPPINGS

    cfg = load_config(write(tmp_path, STARTER_TOML))
    assert list(cfg.mappings) == list(DEFAULT_ZOOM_MAPPINGS)


def test_bad_toml_names_the_file(tmp_path):
    p = write(tmp_path, "[graph\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(p) in str(info.value) and "TOML" in str(info.value)


def test_missing_key_is_named(tmp_path):
    text = STARTER_TOML.replace('tenant_id = "00000000-0000-0000-0000-000000000000"\n', "")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "graph.tenant_id" in str(info.value)


def test_wrong_type_is_named(tmp_path):
    text = STARTER_TOML.replace("concurrency = 16", 'concurrency = "many"')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "target.concurrency" in str(info.value)


def test_http_refused_for_non_loopback(tmp_path):
    text = STARTER_TOML.replace("https://api.zoom.us/scim2", "http://api.zoom.us/scim2")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "https is required" in str(info.value)


def test_http_allowed_for_loopback(tmp_path):
    text = STARTER_TOML.replace("https://api.zoom.us/scim2", "http://127.0.0.1:8080/scim2")
    assert load_config(write(tmp_path, text)).target.base_url == "http://127.0.0.1:8080/scim2"


def test_mapping_needs_exactly_one_source(tmp_path):
    text = STARTER_TOML.replace('source = "surname"', 'source = "surname"\nconstant = "x"')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "mappings[3]" in str(info.value)


def test_username_mapping_required(tmp_path):
    text = STARTER_TOML.replace('target = "userName"', 'target = "nickName"')
    with pytest.raises(ConfigError, match="userName"):
        load_config(write(tmp_path, text))


def test_regex_timeout_is_a_limit_with_a_default(tmp_path):
    """limits.regex_timeout: 0.1 s by default, positive, at most 10 s."""
    assert load_config(write(tmp_path, STARTER_TOML)).limits.regex_timeout == 0.1
    for bad in ("0", "-1", "11", '"fast"'):
        text = STARTER_TOML.replace("[state]", f"[limits]\nregex_timeout = {bad}\n\n[state]")
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, text))
        assert "limits.regex_timeout" in str(info.value)


def test_secret_from_env_and_file(tmp_path, monkeypatch):
    cfg = load_config(write(tmp_path, STARTER_TOML))
    monkeypatch.setenv("BULKPROV_SCIM_TOKEN", "tok-123")
    secret = cfg.target.token.read("target.token", "c.toml")
    assert secret.get_secret_value() == "tok-123" and "tok-123" not in repr(secret)
    f = tmp_path / "s"
    f.write_text("from-file\n")
    text = STARTER_TOML.replace(
        'token = { env = "BULKPROV_SCIM_TOKEN" }', f'token = {{ file = "{f}" }}'
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.target.token.read("target.token", None).get_secret_value() == "from-file"


def test_missing_secret_names_variable_not_value(tmp_path, monkeypatch):
    monkeypatch.delenv("BULKPROV_SCIM_TOKEN", raising=False)
    cfg = load_config(write(tmp_path, STARTER_TOML))
    with pytest.raises(ConfigError) as info:
        cfg.target.token.read("target.token", "c.toml")
    assert "BULKPROV_SCIM_TOKEN" in str(info.value) and "target.token" in str(info.value)


def test_a_secret_pasted_into_the_config_is_in_no_traceback(tmp_path):
    # A secret written in the TOML as a plain string (not {env=...}/{file=...}) is refused;
    # pydantic's error text quotes the input, so the ConfigError must not chain it.
    import traceback

    secret = "pasted-secret-Qm4-never-shown"
    text = STARTER_TOML.replace(
        'client_secret = { env = "BULKPROV_GRAPH_SECRET" }', f'client_secret = "{secret}"'
    )
    assert secret in text
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert secret not in "".join(traceback.format_exception(caught.value))


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    """A cron job run from another folder uses the state, secrets and CA beside the config
    (issue 20, item 7): never a second state in the working directory."""
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "zoom.token").write_text("tok-from-file\n")
    text = STARTER_TOML.replace(
        'token = { env = "BULKPROV_SCIM_TOKEN" }',
        'token = { file = "zoom.token" }\nca_file = "certs/ca.pem"',
    ).replace('path = "bulkprov-state.sqlite3"', 'path = "state/bulkprov.sqlite3"')
    config = folder / "zoom.toml"
    config.write_text(text)
    elsewhere = tmp_path / "cron-home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../etc/zoom.toml")
    assert cfg.state.path == folder / "state" / "bulkprov.sqlite3"
    assert cfg.target.ca_file == folder / "certs" / "ca.pem"
    assert cfg.target.token.read("target.token", None).get_secret_value() == "tok-from-file"
    from bulkprov.observe.report import reports_dir

    assert reports_dir(cfg) == folder / "state" / "bulkprov.sqlite3.reports"
    # absolute paths stay as they are
    absolute = text.replace('path = "state/bulkprov.sqlite3"', f'path = "{tmp_path}/abs.db"')
    config.write_text(absolute)
    assert load_config(config).state.path == tmp_path / "abs.db"
