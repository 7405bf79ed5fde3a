"""Settings: precedence (defaults < file < env < flags), sources, file safety, config init/show."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from dsqlops.config import ENV_KEYS, EXAMPLE_PATH, PROFILE_DEFAULTS, example_text, load_file, resolve
from dsqlops.errors import ConfigError, ExitCode
from tests.control.conftest import invoke


@pytest.fixture()
def cfg_env(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in [*ENV_KEYS, "DSQLOPS_PROFILE", "DSQLOPS_CONFIG", "DSQLOPS_OUTPUT", "AWS_REGION", "AWS_DEFAULT_REGION",
                "AWS_PROFILE"]:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


FILE = """
default_profile: work
profiles:
  work:
    region: us-east-2
    port: 6543
    cluster: abcdefghijklmnopqrstuvwxyz
    user: app_ro
  other:
    region: eu-west-1
"""


def test_defaults_only(cfg_env):
    s = resolve(env={})
    assert s.values == PROFILE_DEFAULTS
    assert set(s.sources.values()) == {"default"}
    assert s.profile_name == "default" and s.config_path is None


def test_precedence_defaults_file_env_flags(cfg_env):
    p = write(cfg_env / "c.yaml", FILE)
    s = resolve(config_path=str(p), env={})
    assert (s.region, s.port, s.user, s.sslmode) == ("us-east-2", 6543, "app_ro", "verify-full")
    assert s.sources["region"].startswith(f"file {p}") and s.sources["sslmode"] == "default"
    s = resolve(config_path=str(p), env={"DSQLOPS_REGION": "us-west-2", "DSQLOPS_PORT": "7000"})
    assert (s.region, s.port, s.user) == ("us-west-2", 7000, "app_ro")
    assert s.sources["region"] == "env DSQLOPS_REGION"
    s = resolve(config_path=str(p), env={"DSQLOPS_REGION": "us-west-2"}, flags={"region": "eu-west-1"})
    assert s.region == "eu-west-1" and s.sources["region"] == "flag --region"
    # AWS_REGION is only a fallback when nothing of ours set a region.
    s = resolve(env={"AWS_REGION": "ap-south-1"})
    assert s.region == "ap-south-1" and s.sources["region"] == "env AWS_REGION"
    s = resolve(config_path=str(p), env={"AWS_REGION": "ap-south-1"})
    assert s.region == "us-east-2"


def test_profile_selection(cfg_env):
    p = write(cfg_env / "c.yaml", FILE)
    assert resolve(config_path=str(p), env={}).profile_name == "work"
    s = resolve(config_path=str(p), env={"DSQLOPS_PROFILE": "other"})
    assert s.region == "eu-west-1" and s.sources["profile"] == "env DSQLOPS_PROFILE"
    s = resolve(config_path=str(p), profile="other", env={"DSQLOPS_PROFILE": "work"})
    assert s.region == "eu-west-1" and s.port == 5432
    # Not a dsqlops profile: used as the AWS profile name (like the AWS CLI).
    s = resolve(config_path=str(p), profile="sso-admin", env={})
    assert s.aws_profile == "sso-admin" and s.sources["aws_profile"] == "flag --profile"
    assert s.region is None


def test_default_profile_must_exist(cfg_env):
    p = write(cfg_env / "c.yaml", "default_profile: nope\nprofiles:\n  a: {region: us-east-1}\n")
    with pytest.raises(ConfigError, match="default_profile 'nope'"):
        resolve(config_path=str(p), env={})


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620])
def test_b7_group_or_world_writable_file_refused_253(cfg_env, mode):
    write(cfg_env / "xdg" / "dsqlops" / "config.yaml", FILE, mode)
    r = invoke(["config", "show"])
    assert r.exit_code == ExitCode.CONFIG == 253
    assert "writable by group or others" in r.stderr and "chmod 600" in r.stderr


def test_readable_0644_file_accepted(cfg_env):
    write(cfg_env / "xdg" / "dsqlops" / "config.yaml", FILE, 0o644)
    r = invoke(["-o", "json", "config", "show"])
    assert r.exit_code == 0, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the symlink rule applies when running as root")
def test_b7_symlink_refused_as_root(cfg_env):
    real = write(cfg_env / "real.yaml", FILE)
    link = cfg_env / "link.yaml"
    link.symlink_to(real)
    r = invoke(["--config", str(link), "config", "show"])
    assert r.exit_code == ExitCode.CONFIG and "symlink" in r.stderr


def test_malformed_yaml_is_line_numbered(cfg_env):
    p = write(cfg_env / "c.yaml", "profiles:\n  a:\n    region: [us-east-1\n    port: 1\n")
    r = invoke(["--config", str(p), "config", "show"])
    assert r.exit_code == ExitCode.CONFIG
    assert re.search(r"line \d+, column \d+", r.stderr), r.stderr
    p2 = write(cfg_env / "d.yaml", "profiles:\n  a:\n    region: us-east-1\n   bad: x\n")
    r = invoke(["--config", str(p2), "config", "show"])
    assert r.exit_code == ExitCode.CONFIG and "line 4" in r.stderr


@pytest.mark.parametrize("text,needle", [
    ("- a\n- b\n", "top level must be a mapping"),
    ("profiles: [a]\n", "'profiles' must be a mapping"),
    ("profiles:\n  a: 3\n", "must be a mapping"),
    ("profiles:\n  a: {regoin: us-east-1}\n", "unknown key(s): regoin"),
    ("profiles:\n  default: {sslmode: disable}\n", "sslmode 'disable'"),
    ("profiles:\n  default: {port: 70000}\n", "between 1 and 65535"),
    ("profiles:\n  default: {port: abc}\n", "whole number"),
    ("profiles:\n  default: {token_expires_in: 604801}\n", "between 1 and 604800"),
    ("profiles:\n  default: {region: US-EAST-1}\n", "not an AWS region"),
])
def test_bad_config_content_is_253(cfg_env, text, needle):
    p = write(cfg_env / "c.yaml", text)
    r = invoke(["--config", str(p), "config", "show"])
    assert r.exit_code == ExitCode.CONFIG, r.stderr
    assert needle in r.stderr


def test_missing_explicit_config_is_253(cfg_env):
    r = invoke(["--config", str(cfg_env / "none.yaml"), "config", "show"])
    assert r.exit_code == ExitCode.CONFIG and "does not exist" in r.stderr
    r = invoke(["config", "show"], env={"DSQLOPS_CONFIG": str(cfg_env / "none.yaml")})
    assert r.exit_code == ExitCode.CONFIG and "DSQLOPS_CONFIG" in r.stderr


def test_bad_env_value_is_253(cfg_env):
    r = invoke(["config", "show"], env={"DSQLOPS_PORT": "eighty"})
    assert r.exit_code == ExitCode.CONFIG and "DSQLOPS_PORT" in r.stderr


@pytest.mark.parametrize("fmt", ["json", "yaml", "csv", "table"])
def test_config_show_every_format_with_sources(cfg_env, fmt):
    p = write(cfg_env / "c.yaml", FILE + "reports:\n  out: /tmp/x\n")
    r = invoke(["--config", str(p), "--region", "us-west-2", "-o", fmt, "config", "show"],
               env={"DSQLOPS_USER": "envuser"})
    assert r.exit_code == 0, r.stderr
    if fmt == "json":
        rows = {x["key"]: x for x in json.loads(r.stdout)}
    elif fmt == "yaml":
        rows = {x["key"]: x for x in yaml.safe_load(r.stdout)}
    else:
        assert "flag --region" in r.stdout and "env DSQLOPS_USER" in r.stdout
        return
    assert rows["region"] == {"key": "region", "value": "us-west-2", "source": "flag --region"}
    assert rows["user"]["source"] == "env DSQLOPS_USER" and rows["user"]["value"] == "envuser"
    assert rows["port"]["value"] == 6543 and rows["port"]["source"].startswith("file")
    assert rows["sslmode"]["source"] == "default"
    assert rows["profile"]["value"] == "work"
    assert rows["reports"]["value"] == {"out": "/tmp/x"}
    assert set(PROFILE_DEFAULTS) <= set(rows)


def test_config_init_writes_0600_and_refuses_overwrite(cfg_env):
    r = invoke(["config", "init"])
    assert r.exit_code == 0, r.stderr
    target = cfg_env / "xdg" / "dsqlops" / "config.yaml"
    assert r.stdout.strip() == str(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == example_text()
    target.write_text("# mine\n")
    r = invoke(["config", "init"])
    assert r.exit_code == ExitCode.USAGE and "--force" in r.stderr
    assert target.read_text() == "# mine\n"
    r = invoke(["config", "init", "--force"])
    assert r.exit_code == 0 and target.read_text() == example_text()
    # The written file is a valid config that dsqlops accepts as is.
    assert invoke(["config", "show"]).exit_code == 0


def test_config_init_path(cfg_env):
    target = cfg_env / "deep" / "er" / "dsqlops.yaml"
    r = invoke(["config", "init", "--path", str(target)])
    assert r.exit_code == 0, r.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    r = invoke(["--config", str(target), "-o", "json", "config", "show"])
    assert r.exit_code == 0


def test_example_documents_every_key(cfg_env):
    text = EXAMPLE_PATH.read_text()
    for key in PROFILE_DEFAULTS:
        assert re.search(rf"^\s*#\s*{key}:", text, re.M), f"config.example.yaml does not document {key}"
    for var in ENV_KEYS:
        assert var in text, f"config.example.yaml does not mention {var}"
    assert "default_profile" in text and "sandbox" in text
    # It loads as a config, and so does every commented profile once uncommented.
    p = write(cfg_env / "ex.yaml", text)
    assert "profiles" in load_file(p)


def test_generated_example_when_repo_file_missing(cfg_env, monkeypatch):
    import dsqlops.config as config

    monkeypatch.setattr(config, "EXAMPLE_PATH", cfg_env / "missing.yaml")
    text = config.example_text()
    for key in PROFILE_DEFAULTS:
        assert f"# {key}:" in text
    p = write(cfg_env / "gen.yaml", text)
    assert load_file(p) == {"profiles": {"default": None}}


def test_env_read_by_click_is_reported_as_env(cfg_env):
    """click reads DSQLOPS_REGION/PROFILE/CONFIG into the global options; config show still says env."""
    p = write(cfg_env / "c.yaml", FILE)
    r = invoke(["-o", "json", "config", "show"],
               env={"DSQLOPS_REGION": "us-west-2", "DSQLOPS_PROFILE": "other", "DSQLOPS_CONFIG": str(p)})
    rows = {x["key"]: x for x in json.loads(r.stdout)}
    assert rows["region"]["source"] == "env DSQLOPS_REGION"
    assert rows["profile"] == {"key": "profile", "value": "other", "source": "env DSQLOPS_PROFILE"}
    assert rows["config_file"]["source"] == "env DSQLOPS_CONFIG"
    r = invoke(["--region", "eu-west-1", "-o", "json", "config", "show"], env={"DSQLOPS_REGION": "us-west-2"})
    rows = {x["key"]: x for x in json.loads(r.stdout)}
    assert rows["region"] == {"key": "region", "value": "eu-west-1", "source": "flag --region"}
