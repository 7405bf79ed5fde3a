"""How dsqlops reaches AWS: the retry policy (botocore's, configurable, one loop only), the endpoint
URL and the AWS profile. HTTP attempts are counted at botocore's ``before-send`` (Stubber would skip
the retry handler, dsql-facts.md §R0.2); what gets through is answered by moto."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from dsqlops.aws import AwsContext
from dsqlops.config import resolve
from dsqlops.errors import ConfigError, ExitCode
from tests.control.conftest import create
from tests.control.test_retries import _install, _Raw


class ServerError:
    """Answer every matching request with HTTP 500 InternalServerException and a request id."""

    def __init__(self, method: str, path_suffix: str):
        self.method, self.suffix = method, path_suffix
        self.bodies: list[dict[str, Any] | None] = []

    def __call__(self, request: Any, **_kw: Any) -> AWSResponse | None:
        if request.method != self.method or not request.url.split("?")[0].endswith(self.suffix):
            return None
        body = request.body.decode() if isinstance(request.body, bytes | bytearray) else request.body
        self.bodies.append(json.loads(body) if body else None)
        payload = json.dumps({"message": "internal failure from the test"}).encode()
        return AWSResponse(request.url, 500, {"x-amzn-ErrorType": "InternalServerException",
                                              "x-amzn-RequestId": f"req-{len(self.bodies)}",
                                              "Content-Type": "application/json"}, _Raw(payload))


@pytest.fixture()
def no_sleep(monkeypatch):  # type: ignore[no-untyped-def]
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", lambda s: slept.append(s))
    return slept


def _config(tmp_path, text: str) -> str:  # type: ignore[no-untyped-def]
    p = tmp_path / "dsqlops.yaml"
    p.write_text(text)
    p.chmod(0o600)
    return str(p)


def _aws_config(tmp_path, text: str) -> str:  # type: ignore[no-untyped-def]
    p = tmp_path / "aws-config"
    p.write_text(text)
    return str(p)


def test_f2_create_on_5xx_uses_the_configured_attempts_and_one_client_token(run, dsql, monkeypatch, no_sleep):
    e = ServerError("POST", "/cluster")
    _install(monkeypatch, e)  # type: ignore[arg-type]
    r = run(["cluster", "create", "--tag", "env=ci"], env={"AWS_MAX_ATTEMPTS": "3"})
    assert r.exit_code == ExitCode.SERVICE
    assert len(e.bodies) == 3  # AWS_MAX_ATTEMPTS=3: three HTTP attempts, no more
    assert len({b["clientToken"] for b in e.bodies if b}) == 1
    assert "InternalServerException" in r.stderr and "request id req-3" in r.stderr
    # moto still sees every attempt (botocore runs each before-send handler; the first answer wins), as
    # a server whose answer was lost would: the one clientToken made that one cluster, not three.
    assert len(dsql.list_clusters()["clusters"]) == 1


@pytest.mark.parametrize(("case", "expected"), [
    ("default", 5),
    ("env AWS_MAX_ATTEMPTS", 3),
    ("env DSQLOPS_MAX_ATTEMPTS beats AWS_MAX_ATTEMPTS", 2),
    ("config file", 4),
    ("AWS profile", 6),
    ("config file beats AWS profile", 2),
])
def test_f2_http_attempts_follow_the_setting(run, monkeypatch, tmp_path, no_sleep, case, expected):
    c = create(run)
    env: dict[str, str] = {}
    args: list[str] = []
    if case == "env AWS_MAX_ATTEMPTS":
        env["AWS_MAX_ATTEMPTS"] = "3"
    elif case.startswith("env DSQLOPS"):
        env.update(DSQLOPS_MAX_ATTEMPTS="2", AWS_MAX_ATTEMPTS="6")
    elif case == "config file":
        args = ["--config", _config(tmp_path, "profiles:\n  default:\n    max_attempts: 4\n")]
    elif case == "AWS profile":
        env["AWS_CONFIG_FILE"] = _aws_config(tmp_path, "[default]\nmax_attempts = 6\n")
    elif case == "config file beats AWS profile":
        env["AWS_CONFIG_FILE"] = _aws_config(tmp_path, "[default]\nmax_attempts = 6\nretry_mode = legacy\n")
        args = ["--config", _config(tmp_path, "profiles:\n  default:\n    max_attempts: 2\n")]
    e = ServerError("GET", f"/cluster/{c['id']}")
    _install(monkeypatch, e)  # type: ignore[arg-type]
    r = run([*args, "cluster", "show", c["id"]], env=env)
    assert r.exit_code == ExitCode.SERVICE, r.stderr
    assert len(e.bodies) == expected


def test_retry_mode_follows_the_setting(monkeypatch, tmp_path):
    for var in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "DSQLOPS_RETRY_MODE", "DSQLOPS_MAX_ATTEMPTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))

    def retries() -> Any:
        return AwsContext.from_settings(resolve(flags={"region": "us-east-1"})).dsql().meta.config.retries

    assert retries() == {"mode": "standard", "total_max_attempts": 5}
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    assert retries() == {"mode": "adaptive", "total_max_attempts": 5}
    monkeypatch.setenv("DSQLOPS_RETRY_MODE", "legacy")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")
    assert retries() == {"mode": "legacy", "total_max_attempts": 7}
    monkeypatch.delenv("DSQLOPS_RETRY_MODE")
    monkeypatch.delenv("AWS_RETRY_MODE")
    monkeypatch.setenv("AWS_CONFIG_FILE", _aws_config(tmp_path, "[default]\nretry_mode = adaptive\n"))
    assert retries() == {"mode": "adaptive", "total_max_attempts": 7}
    s = resolve(flags={"region": "us-east-1"})
    assert {r["key"]: r["source"] for r in s.effective()}["max_attempts"] == "env AWS_MAX_ATTEMPTS"


@pytest.mark.parametrize(("env", "needle"), [
    ({"AWS_MAX_ATTEMPTS": "0"}, "max_attempts must be between 1 and 100 (from env AWS_MAX_ATTEMPTS)"),
    ({"DSQLOPS_MAX_ATTEMPTS": "many"}, "max_attempts must be a whole number (from env DSQLOPS_MAX_ATTEMPTS)"),
    ({"AWS_RETRY_MODE": "fast"}, "retry_mode 'fast' (from env AWS_RETRY_MODE) must be one of"),
])
def test_bad_retry_settings_are_config_errors(run, env, needle):
    r = run(["cluster", "list"], env=env)
    assert r.exit_code == ExitCode.CONFIG
    assert needle in r.stderr and "internal error" not in r.stderr


def test_bad_retry_setting_in_the_aws_profile_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", _aws_config(tmp_path, "[default]\nmax_attempts = lots\n"))
    with pytest.raises(ConfigError, match="from AWS profile 'default'"):
        AwsContext(region="us-east-1").dsql()


# --------------------------------------------------------------------------- endpoint URL, profile


@pytest.mark.parametrize("url", ["foo", "ftp://example.com", "http://", "http://host:99999", "https://[::1"])
def test_bad_endpoint_url_is_a_usage_error(run, dsql, url):
    r = run(["--endpoint-url", url, "cluster", "list"])
    assert r.exit_code == ExitCode.USAGE, r.stderr
    assert f"endpoint URL {url!r}" in r.stderr and "internal error" not in r.stderr
    assert "hint: pass a URL such as" in r.stderr


def test_bad_endpoint_url_from_the_environment_is_a_config_error(run):
    r = run(["cluster", "list"], env={"DSQLOPS_ENDPOINT_URL": "foo"})
    assert r.exit_code == ExitCode.CONFIG
    assert "endpoint URL 'foo' (from env DSQLOPS_ENDPOINT_URL)" in r.stderr


def test_unknown_profile_is_named_not_reported_as_a_missing_region(run, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", _aws_config(tmp_path, "[profile real]\nregion = us-east-2\n"))
    for argv in (["--profile", "nosuch", "cluster", "list"],
                 ["--profile", "nosuch", "--region", "us-east-1", "cluster", "list"]):
        r = run(argv)
        assert r.exit_code == ExitCode.CONFIG, r.stderr
        assert "AWS profile 'nosuch' is not configured" in r.stderr and "no AWS region" not in r.stderr
    r = run(["cluster", "list"], env={"AWS_PROFILE": "nosuch"})
    assert r.exit_code == ExitCode.CONFIG and "AWS profile 'nosuch' is not configured" in r.stderr


@pytest.mark.parametrize("argv", [["token", "-c", "a" * 26], ["sql", "-c", "a" * 26, "select 1"],
                                  ["cost", "--cluster-id", "a" * 26], ["metrics", "a" * 26]])
def test_unknown_profile_is_named_by_every_command(run, monkeypatch, tmp_path, argv):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    r = run(["--profile", "nosuch", *argv])
    assert r.exit_code == ExitCode.CONFIG, r.stderr
    assert "AWS profile 'nosuch' is not configured" in r.stderr and "region" not in r.stderr.split("hint:")[0]


def test_the_aws_profiles_region_is_used(run, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    # A named profile takes its credentials from its own section, not from the environment.
    monkeypatch.setenv("AWS_CONFIG_FILE", _aws_config(tmp_path, "[profile real]\nregion = us-east-2\n"
                                                      "aws_access_key_id = AKIDTEST\naws_secret_access_key = x\n"))
    c = create(run, region="us-east-2")
    r = run(["--profile", "real", "-o", "json", "cluster", "list"])
    assert r.exit_code == 0, r.stderr
    assert [x["id"] for x in r.json()] == [c["id"]]
    r = run(["--profile", "real", "config", "show"])
    assert "AWS profile 'real'" in r.stdout


def test_no_region_anywhere_still_says_so(run, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    r = run(["cluster", "list"])
    assert r.exit_code == ExitCode.CONFIG and "no AWS region" in r.stderr
    assert os.environ.get("AWS_REGION") is None
