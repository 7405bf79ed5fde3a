"""Settings: defaults < config file < DSQLOPS_* environment < command-line flags.

The config file (YAML) holds named *profiles* plus top-level sections that later features read
(``pricing_file``, ``budgets``, ``reports``). ``--profile NAME`` selects a dsqlops profile; when
the file defines no profile of that name, NAME is used as the AWS profile instead, like the AWS CLI.
Every key is documented in ``config.example.yaml``.

The file holds no secrets. It is refused when it is group/world-writable or owned by another
user (libpq's ``.pgpass`` rule), and, when running as root, when it is a symlink.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsqlops.errors import ConfigError, UsageError

#: Profile keys with their defaults. ``None`` means "not set" (boto3 / libpq defaults apply).
PROFILE_DEFAULTS: dict[str, Any] = {
    "region": None,
    "aws_profile": None,
    "endpoint_url": None,
    "cluster": None,
    "user": "admin",
    "sslmode": "verify-full",
    "sslrootcert": None,
    "sslnegotiation": "auto",
    "hostaddr": None,
    "port": 5432,
    "connect_timeout": 10,
    "statement_timeout": 330,
    "application_name": "dsqlops",
    "token_expires_in": 900,
    # AWS call retries (botocore's policy, dsqlops.aws). None: AWS_RETRY_MODE / AWS_MAX_ATTEMPTS, the
    # AWS profile's retry_mode / max_attempts, else standard / 5.
    "retry_mode": None,
    "max_attempts": None,
}

#: Environment variable → profile key. The standard AWS_* variables keep working through boto3.
ENV_KEYS: dict[str, str] = {
    "DSQLOPS_REGION": "region",
    "DSQLOPS_AWS_PROFILE": "aws_profile",
    "DSQLOPS_ENDPOINT_URL": "endpoint_url",
    "DSQLOPS_CLUSTER": "cluster",
    "DSQLOPS_USER": "user",
    "DSQLOPS_SSLMODE": "sslmode",
    "DSQLOPS_SSLROOTCERT": "sslrootcert",
    "DSQLOPS_SSLNEGOTIATION": "sslnegotiation",
    "DSQLOPS_HOSTADDR": "hostaddr",
    "DSQLOPS_PORT": "port",
    "DSQLOPS_CONNECT_TIMEOUT": "connect_timeout",
    "DSQLOPS_STATEMENT_TIMEOUT": "statement_timeout",
    "DSQLOPS_APPLICATION_NAME": "application_name",
    "DSQLOPS_TOKEN_EXPIRES_IN": "token_expires_in",
    "DSQLOPS_RETRY_MODE": "retry_mode",
    "DSQLOPS_MAX_ATTEMPTS": "max_attempts",
}

INT_KEYS = {"port", "connect_timeout", "statement_timeout", "token_expires_in"}
#: Inclusive bounds of the integer keys (token lifetime: docs/dsql-facts.md §2.1, at most one week).
INT_RANGES: dict[str, tuple[int, int]] = {"port": (1, 65535), "connect_timeout": (1, 3600),
                                          "statement_timeout": (1, 86400),
                                          "token_expires_in": (1, 604800)}
SSLMODES = {"verify-full", "verify-ca", "require"}
#: auto = direct TLS only with libpq >= 17 and no hostaddr/port override (dsqlops.data.tls).
SSLNEGOTIATIONS = {"auto", "direct", "postgres"}


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "dsqlops" / "config.yaml"


@dataclass
class Settings:
    """The effective settings of one invocation and where each value came from."""

    profile_name: str = "default"
    values: dict[str, Any] = field(default_factory=lambda: dict(PROFILE_DEFAULTS))
    sources: dict[str, str] = field(default_factory=lambda: dict.fromkeys(PROFILE_DEFAULTS, "default"))
    #: The whole parsed config file ({} when there is none), for sections such as budgets/reports.
    raw: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None
    output: str = "table"
    debug: bool = False
    progress: bool = True

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def get(self, key: str, default: Any = None) -> Any:
        v = self.values.get(key)
        return default if v is None else v

    def section(self, name: str) -> Any:
        """A top-level section of the config file (``budgets``, ``reports``, ``pricing_file``…)."""
        return self.raw.get(name)

    def effective(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [
            {"key": "profile", "value": self.profile_name, "source": self.sources.get("profile", "default")},
                {"key": "config_file", "value": str(self.config_path) if self.config_path else None,
                 "source": self.sources.get("config_file", "default")}]
        for k in PROFILE_DEFAULTS:
            rows.append({"key": k, "value": self.values.get(k), "source": self.sources.get(k, "default")})
        return rows


def _check_file_safety(path: Path) -> None:
    try:
        st = os.lstat(path)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        if os.geteuid() == 0:
            raise ConfigError(f"config file {path} is a symlink; refused when running as root")
        st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"config file {path} is not a regular file")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"config file {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})",
            hint=f"chmod 600 {path}",
        )
    if hasattr(os, "geteuid") and st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"config file {path} is owned by another user (uid {st.st_uid})")


def load_file(path: Path) -> dict[str, Any]:
    """Parse and shape-check a config file; errors name the file and line."""
    import yaml

    from dsqlops import yamlsafe

    _check_file_safety(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = yamlsafe.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"config file {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    profiles = data.get("profiles", {})
    if profiles is None:
        profiles = {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"config file {path}: 'profiles' must be a mapping of name -> settings")
    dp = data.get("default_profile")
    if dp is not None:
        if not isinstance(dp, str) or not dp:
            raise ConfigError(f"config file {path}: 'default_profile' must be a profile name")
        if dp not in profiles:
            raise ConfigError(f"config file {path}: default_profile {dp!r} is not defined under 'profiles'",
                              hint=f"defined: {', '.join(sorted(map(str, profiles))) or 'none'}")
    for name, prof in profiles.items():
        if prof is None:
            continue
        if not isinstance(prof, dict):
            raise ConfigError(f"config file {path}: profile {name!r} must be a mapping")
        unknown = set(prof) - set(PROFILE_DEFAULTS)
        if unknown:
            raise ConfigError(
                f"config file {path}: profile {name!r} has unknown key(s): {', '.join(sorted(unknown))}",
                hint="see config.example.yaml for every key",
            )
    return data


def _coerce(key: str, value: Any, source: str) -> Any:
    if value is None:
        return None
    if key in INT_KEYS:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a whole number (from {source}): {value!r}")
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a whole number (from {source}): {value!r}") from None
        lo, hi = INT_RANGES.get(key, (0, 2**31))
        if not lo <= n <= hi:
            raise ConfigError(f"{key} must be between {lo} and {hi} (from {source}): {n}")
        return n
    if key in ("retry_mode", "max_attempts", "endpoint_url"):
        from dsqlops import aws

        if key == "retry_mode":
            return aws.parse_retry_mode(value, source)
        if key == "max_attempts":
            return aws.parse_max_attempts(value, source)
        try:
            return aws.validate_endpoint_url(str(value), source)
        except UsageError as e:
            if source.startswith("flag"):
                raise
            raise ConfigError(e.message, hint=e.hint) from None
    if key == "sslnegotiation" and value not in SSLNEGOTIATIONS:
        raise ConfigError(f"sslnegotiation {value!r} (from {source}) must be one of "
                          f"{', '.join(sorted(SSLNEGOTIATIONS))}")
    if key == "sslmode" and value not in SSLMODES:
        raise ConfigError(
            f"sslmode {value!r} (from {source}) is not allowed; DSQL requires TLS: "
            f"use one of {', '.join(sorted(SSLMODES))}"
        )
    text = str(value) if not isinstance(value, str) else value
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the environment or argv, kept as surrogates
        raise ConfigError(f"{key} (from {source}) is not valid UTF-8: {text!a}") from None
    return text


_ENV_OF = {k: var for var, k in ENV_KEYS.items()}


def _flag_source(flag: str, value: Any, env: Mapping[str, str], var: str | None) -> str:
    """click reads DSQLOPS_* variables into the global options, so a "flag" whose value equals
    its variable's came from the environment: say so in ``config show``."""
    if var and env.get(var) is not None and str(env.get(var)) == str(value):
        return f"env {var}"
    return f"flag {flag}"


def resolve(*, config_path: str | None = None, profile: str | None = None,
            flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the effective :class:`Settings` for one invocation."""
    env = os.environ if env is None else env
    s = Settings()
    flags = {k: v for k, v in (flags or {}).items() if v is not None}

    # Which file.
    if config_path:
        path: Path | None = Path(config_path).expanduser()
        s.sources["config_file"] = _flag_source("--config", config_path, env, "DSQLOPS_CONFIG")
        if not os.path.exists(Path(config_path).expanduser()):  # os.path: False, not OSError, for too-long names
            raise ConfigError(f"config file {path} (from {s.sources['config_file']}) does not exist")
    elif env.get("DSQLOPS_CONFIG"):
        path = Path(env["DSQLOPS_CONFIG"]).expanduser()
        s.sources["config_file"] = "env DSQLOPS_CONFIG"
        if not os.path.exists(Path(env["DSQLOPS_CONFIG"]).expanduser()):
            raise ConfigError(f"config file {path} (from DSQLOPS_CONFIG) does not exist")
    else:
        path = default_config_path()
        s.sources["config_file"] = "default"
        if path is not None and not path.exists():
            path = None
    if path is not None:
        s.raw = load_file(path)
        s.config_path = path

    # Which profile.
    if profile:
        s.profile_name, s.sources["profile"] = profile, _flag_source("--profile", profile, env, "DSQLOPS_PROFILE")
    elif env.get("DSQLOPS_PROFILE"):
        s.profile_name, s.sources["profile"] = env["DSQLOPS_PROFILE"], "env DSQLOPS_PROFILE"
    elif s.raw.get("default_profile"):
        s.profile_name, s.sources["profile"] = str(s.raw["default_profile"]), f"file {path}"
    profiles = s.raw.get("profiles") or {}
    if s.profile_name in profiles:
        for k, v in (profiles[s.profile_name] or {}).items():
            src = f"file {path} (profile {s.profile_name})"
            s.values[k] = _coerce(k, v, src)
            s.sources[k] = src
    elif s.sources.get("profile", "default") != "default":
        # Not a dsqlops profile: treat it as an AWS profile name, the way the AWS CLI does.
        s.values["aws_profile"] = s.profile_name
        s.sources["aws_profile"] = s.sources["profile"]

    for var, k in ENV_KEYS.items():
        if env.get(var):
            s.values[k] = _coerce(k, env[var], f"env {var}")
            s.sources[k] = f"env {var}"
    if s.values.get("region") is None:
        for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if env.get(var):
                s.values["region"], s.sources["region"] = env[var], f"env {var}"
                break
    for key, var in (("retry_mode", "AWS_RETRY_MODE"), ("max_attempts", "AWS_MAX_ATTEMPTS")):
        if s.values.get(key) is None and env.get(var):
            s.values[key], s.sources[key] = _coerce(key, env[var], f"env {var}"), f"env {var}"
    for k, v in flags.items():
        if k not in PROFILE_DEFAULTS:
            raise UsageError(f"unknown setting {k!r}")
        src = _flag_source(f"--{k.replace('_', '-')}", v, env, _ENV_OF.get(k))
        s.values[k] = _coerce(k, v, src)
        s.sources[k] = src
    if s.values.get("region") is None:
        # The AWS profile's own region (~/.aws/config), as boto3 would use it.
        from dsqlops.aws import profile_region

        region = profile_region(s.values.get("aws_profile"))
        if region:
            s.values["region"] = region
            s.sources["region"] = f"AWS profile {s.values.get('aws_profile') or 'default'!r}"
    if s.values.get("region"):
        from dsqlops.validate import validate_region

        try:
            validate_region(s.values["region"])
        except UsageError as e:
            raise ConfigError(f"{e.message} (from {s.sources['region']})") from None
    return s


EXAMPLE_PATH = Path(__file__).resolve().parent.parent / "config.example.yaml"


def example_text() -> str:
    """The commented example config: the repository's ``config.example.yaml`` when present (a
    source checkout or editable install), else a generated equivalent listing every profile key."""
    try:
        return EXAMPLE_PATH.read_text(encoding="utf-8")
    except OSError:
        pass
    env_of = {v: k for k, v in ENV_KEYS.items()}
    lines = ["# dsqlops configuration. Precedence: defaults < this file < DSQLOPS_* environment < flags.",
             "# See `dsqlops config show` and docs/control.md for every key.", "",
             "# default_profile: default", "", "profiles:", "  default:"]
    for k, v in PROFILE_DEFAULTS.items():
        env = f"  (env {env_of[k]})" if k in env_of else ""
        lines.append(f"    # {k}: {'' if v is None else v}{env}")
    return "\n".join(lines) + "\n"


def write_user_config(path: Path, text: str, *, force: bool = False) -> Path:
    """Write ``text`` to ``path`` with mode 0600, atomically; refuse to overwrite without force."""
    from dsqlops.fsutil import atomic_write

    if path.exists() and not force:
        raise UsageError(f"{path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, text.encode("utf-8"), mode=0o600)
    return path
