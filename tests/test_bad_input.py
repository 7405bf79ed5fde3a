"""Bad input ends as a one-line error with exit 252 (usage) or 253 (config), never 255.

Each input here once reached an unexpected exception (exit 255 "internal error") or, for the
YAML cases, a 10 GB / 10-minute alias expansion or a RecursionError.
"""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clirun import invoke

# Nothing here may reach a network: a cluster host that points at a closed loopback port.
NO_NET = {"DSQLOPS_HOSTADDR": "127.0.0.1", "DSQLOPS_PORT": "1", "DSQLOPS_CONNECT_TIMEOUT": "1",
          "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_MAX_ATTEMPTS": "1"}
HOST = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"


def _one_clear_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: "), stderr
    assert "internal error" not in stderr and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("args, needle", [
    (["metrics", "abcdefghijklmnopqrstuvwxyz", "--since", "99999999d"], "too long"),
    (["metrics", "abcdefghijklmnopqrstuvwxyz", "--since", "9" * 5000 + "d"], "not a duration"),
    (["cost", "--cluster-id", "abcdefghijklmnopqrstuvwxyz", "--month", "0000-01"], "out of range"),
    (["cost", "--cluster-id", "abcdefghijklmnopqrstuvwxyz", "--month", "9999-12"], "out of range"),
    (["cost", "--cluster-id", "abcdefghijklmnopqrstuvwxyz", "--start", "0001-01-01T00:00:00+01:00",
      "--end", "now"], "out of range"),
])
def test_b6_time_input_out_of_range_is_252(isolated_config, args, needle) -> None:  # type: ignore[no-untyped-def]
    r = invoke(args, env=NO_NET)
    assert r.exit_code == 252, (r.exit_code, r.stderr)
    assert needle in _one_clear_line(r.stderr)


@pytest.mark.parametrize("statement, params, needle", [
    ("select %s", '{"a":1}', "JSON object but the statement uses %s"),
    ("select %(a)s", "[1]", "JSON array but the statement uses %(name)s"),
    ("select %s, %s", "[1]", "2 %s placeholder(s) but --params has 1"),
    ("select %(a)s", '{"b":1}', "no value for %(a)s"),
    ("select %s, %(a)s", "[1]", "mixes"),
    ("select %d", "[1]", "bad placeholder"),
    ("select 100%", "[]", "bad placeholder"),
    ("select %s", '["\\ud800"]', "--params is not valid UTF-8"),
    ("select %(a)s", '{"\\udcff":1, "a":2}', "--params is not valid UTF-8"),
    ("select '\udcff'", None, "not valid UTF-8"),  # argv byte 0xff, kept by Python as a surrogate escape
    ("select 1; select '\ud800'", None, "line 1 is not valid UTF-8"),
])
def test_sql_params_and_encoding_refused_before_connecting(isolated_config, statement, params,  # type: ignore[no-untyped-def]
                                                           needle) -> None:
    args = ["sql", "-c", HOST, statement] + (["--params", params] if params is not None else [])
    r = invoke(args, env=NO_NET)
    assert r.exit_code == 252, (r.exit_code, r.stderr)
    line = _one_clear_line(r.stderr)
    assert needle in line
    assert "connect" not in line  # refused before any connection attempt


def test_sql_invalid_utf8_in_a_real_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("DSQLOPS_", "PG"))}, **NO_NET,
           "XDG_CONFIG_HOME": str(tmp_path), "LC_ALL": "C.UTF-8"}
    r = subprocess.run([sys.executable, "-m", "dsqlops", "sql", "-c", HOST, b"select '\xff\xfe'"],
                       env=env, capture_output=True, timeout=120, check=False)
    assert r.returncode == 252, r.stderr
    assert b"not valid UTF-8" in r.stderr


def test_sql_file_with_invalid_utf8_is_252(isolated_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "bad.sql"
    f.write_bytes(b"select '\xff';\n")
    r = invoke(["sql", "-c", HOST, "-f", str(f)], env=NO_NET)
    assert r.exit_code == 252, r.stderr
    _one_clear_line(r.stderr)


# --------------------------------------------------------------------------- YAML limits

BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


def _config_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    p.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return p


def _limit_memory() -> None:  # a regression must fail the test, not exhaust the shared machine
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("text, needle", [
    ("a: &a [*a]\n", "aliases"),
    (BOMB, "aliases"),
    ("profiles: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper"),
    ("profiles:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)), "nested deeper"),
])
def test_b7_config_yaml_bombs_are_refused_253(tmp_path, text, needle) -> None:  # type: ignore[no-untyped-def]
    cfg = _config_file(tmp_path, text)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("DSQLOPS_", "PG"))},
           "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    # A separate process under a 1 GiB address-space cap and a generous time guard: without the
    # limits this input takes ~10 GB and ~10 minutes, or dies in a RecursionError.
    r = subprocess.run([sys.executable, "-m", "dsqlops", "--config", str(cfg), "config", "show"], env=env,
                       capture_output=True, text=True, timeout=60, check=False, preexec_fn=_limit_memory)
    assert r.returncode == 253, r.stderr
    line = _one_clear_line(r.stderr)
    assert needle in line and str(cfg) in line and "line " in line


def test_role_file_alias_bomb_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dsqlops.data.rolefile import parse_role_file
    from dsqlops.errors import UsageError

    with pytest.raises(UsageError, match="aliases"):
        parse_role_file("roles:\n  - &r {name: a}\n  - *r\n", source="roles.yaml")


def test_price_table_alias_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dsqlops.cost import pricing
    from dsqlops.errors import ConfigError

    p = tmp_path / "prices.yaml"
    p.write_text("regions: &r {us-east-1: *r}\n")
    with pytest.raises(ConfigError, match="aliases"):
        pricing.load(p)


def test_plain_yaml_still_loads() -> None:
    from dsqlops import yamlsafe

    assert yamlsafe.load("a: [1, {b: c}]\nd: 'e'\n") == {"a": [1, {"b": "c"}], "d": "e"}


# --------------------------------------------------------------------------- report --out


def test_report_out_into_a_missing_folder_is_252_and_creates_nothing(isolated_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "missing" / "deeper" / "report.md"
    r = invoke(["report", "--out", str(target), "--lock-file", str(tmp_path / "lock")], env=NO_NET)
    assert r.exit_code == 252, r.stderr
    assert "does not exist" in _one_clear_line(r.stderr)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("bad", ["rw", "0888", "1777", "-1", ""])
def test_report_bad_mode_is_252(isolated_config, tmp_path, bad) -> None:  # type: ignore[no-untyped-def]
    r = invoke(["report", "--out", str(tmp_path / "r.md"), "--mode", bad,
                "--lock-file", str(tmp_path / "lock")], env=NO_NET)
    assert r.exit_code == 252, r.stderr
    assert "--mode" in _one_clear_line(r.stderr)


# --------------------------------------------------------------------------- found by tests/test_fuzz_cli.py


@pytest.mark.parametrize("args, env, code, where", [
    (["--endpoint-url", "0", "token"], {}, 252, "(from flag --endpoint-url)"),  # a bad flag: usage
    (["token"], {"AWS_ENDPOINT_URL": "not a url"}, 253, "from env AWS_ENDPOINT_URL"),  # the environment: config
])
def test_invalid_endpoint_url_is_a_user_error_naming_its_source(isolated_config, args, env, code,  # type: ignore[no-untyped-def]
                                                                where) -> None:
    r = invoke(["--region", "us-east-1", *args, "-c", HOST], env={**NO_NET, **env})
    assert r.exit_code == code, r.stderr
    line = _one_clear_line(r.stderr)
    assert "endpoint" in line.lower() and where in line and "None" not in line


def test_config_path_too_long_to_stat_is_253(isolated_config) -> None:  # type: ignore[no-untyped-def]
    r = invoke(["--config", "9" * 5000, "config", "show"])
    assert r.exit_code == 253, r.stderr[:300]
    assert "does not exist" in _one_clear_line(r.stderr)


def test_flush_metrics_without_a_sandbox_is_a_clear_error(isolated_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = invoke(["sandbox", "flush-metrics", "--dir", str(tmp_path / "nowhere"), "--timeout", "1"])
    assert r.exit_code == 254, r.stderr
    assert "no sandbox" in _one_clear_line(r.stderr)


@pytest.mark.parametrize("name", ["9" * 5000, "a-file/below-it"])
def test_config_init_unwritable_path_is_252(isolated_config, tmp_path, monkeypatch, name) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    r = invoke(["config", "init", "--path", name])
    assert r.exit_code == 252, r.stderr[:300]
    assert "cannot write" in _one_clear_line(r.stderr)


@pytest.mark.parametrize("args, needle", [
    (["select %s"], None),  # no --params: the text goes as it is; only the connection fails here
    (["select %s", "--params", "1", "--params", "2"], "1 %s placeholder(s) but --params has 2"),
    (["select '\udcff'"], "not valid UTF-8"),
])
def test_explain_params_and_encoding_checked_before_connecting(isolated_config, args, needle) -> None:  # type: ignore[no-untyped-def]
    r = invoke(["explain", "-c", HOST, *args], env=NO_NET)
    if needle is None:
        assert r.exit_code == 254 and "cannot connect" in r.stderr, r.stderr
        return
    assert r.exit_code == 252, r.stderr
    assert needle in _one_clear_line(r.stderr)


def test_explain_file_not_utf8_is_252(isolated_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "q.sql"
    f.write_bytes(b"select '\xff'")
    r = invoke(["explain", "-c", HOST, "-f", str(f)], env=NO_NET)
    assert r.exit_code == 252, r.stderr
    assert "not UTF-8" in _one_clear_line(r.stderr)


@pytest.mark.parametrize("args, code", [
    (["pricing", "show", "--pricing-file", "{f}"], 253),
    (["bench", "merge", "{f}"], 252),
])
def test_binary_input_files_are_refused_not_internal_errors(isolated_config, tmp_path, args, code) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "binary"
    f.write_bytes(b"\xff\xfe\x00junk")
    r = invoke([a.replace("{f}", str(f)) for a in args], env=NO_NET)
    assert r.exit_code == code, r.stderr
    assert "not UTF-8" in _one_clear_line(r.stderr)


def test_undecodable_environment_value_is_253(isolated_config) -> None:  # type: ignore[no-untyped-def]
    r = invoke(["sql", "-c", HOST, "select 1"], env={**NO_NET, "DSQLOPS_APPLICATION_NAME": "x\udcff"})
    assert r.exit_code == 253, r.stderr
    assert "application_name" in _one_clear_line(r.stderr) and "UTF-8" in r.stderr


def test_sslrootcert_too_long_to_stat_is_253(isolated_config) -> None:  # type: ignore[no-untyped-def]
    r = invoke(["sql", "-c", HOST, "select 1"], env={**NO_NET, "DSQLOPS_SSLROOTCERT": "9" * 5000})
    assert r.exit_code == 253, r.stderr[:300]
    assert "not a readable file" in _one_clear_line(r.stderr)
