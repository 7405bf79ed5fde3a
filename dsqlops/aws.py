"""The only place that builds boto3 sessions and clients, and maps ``ClientError``.

Region, AWS profile and endpoint URL come from :class:`dsqlops.config.Settings`; the standard
``AWS_*`` variables keep working because boto3 reads them.

**One retry policy for every AWS call: botocore's.** Throttling and 5xx answers are retried inside
botocore with its jittered, capped backoff and its client-wide retry quota; no dsqlops code loops
on top of it (a second loop multiplies attempts and hides the setting). The retry mode and the total
number of attempts come, first found wins, from the dsqlops setting (``retry_mode`` /
``max_attempts``: flag, ``DSQLOPS_*``, config file), ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS``, the
AWS profile's ``retry_mode`` / ``max_attempts``, else ``standard`` and 5. They are always passed to
botocore explicitly because its own default changed across versions (docs/control.md, "Retries";
docs/dsql-facts.md §R1.1).

``--debug`` never turns on botocore's wire logging: it prints the session token.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsqlops.errors import ConfigError, ConflictError, NotFoundError, ServiceError, UsageError

if TYPE_CHECKING:
    # The clients' types come from the boto3-stubs packages of the dev extra (type checking only).
    import boto3
    from botocore.config import Config
    from mypy_boto3_ce import CostExplorerClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dsql import AuroraDSQLClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_pricing import PricingClient
    from mypy_boto3_sts import STSClient

DEFAULT_RETRY_MODE = "standard"
DEFAULT_MAX_ATTEMPTS = 5
RETRY_MODES = ("standard", "adaptive", "legacy")
#: Upper bound of ``max_attempts``: far past any useful backoff (botocore caps a sleep at 20 s).
MAX_ATTEMPTS_LIMIT = 100
#: Error codes that mean "throttled, try again later", across services and protocols (CloudWatch is
#: awsQueryCompatible and answers ``Throttling``; DSQL answers ``ThrottlingException``).
THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "TooManyRequestsException",
                              "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException"})
#: The Price List API exists only in these regions (docs/dsql-facts.md §5.4).
PRICING_REGIONS = ("us-east-1", "eu-central-1", "ap-south-1")
ENDPOINT_URL_HINT = "pass a URL such as https://dsql.us-east-1.api.aws or http://127.0.0.1:4566"


@dataclass
class AwsContext:
    """How to reach AWS (or the sandbox): region, AWS profile, endpoint URL."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    #: None: AWS_RETRY_MODE, then the AWS profile's retry_mode, then standard.
    retry_mode: str | None = None
    #: Total attempts including the first. None: AWS_MAX_ATTEMPTS, the AWS profile's, then 5.
    max_attempts: int | None = None
    _sessions: dict[str | None, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> AwsContext:
        return cls(region=settings.get("region"), profile=settings.get("aws_profile"),
                   endpoint_url=settings.get("endpoint_url"), retry_mode=settings.get("retry_mode"),
                   max_attempts=settings.get("max_attempts"))

    def session(self) -> boto3.Session:
        import boto3
        import botocore.exceptions

        key = self.profile
        if key not in self._sessions:
            try:
                self._sessions[key] = boto3.Session(profile_name=self.profile)
            except botocore.exceptions.ProfileNotFound:
                raise profile_error(self.profile or os.environ.get("AWS_PROFILE")) from None
        return self._sessions[key]

    def retries(self) -> dict[str, Any]:
        """botocore's ``retries`` config: mode and total attempts (see the module doc for the order)."""
        mode: str | None = self.retry_mode
        attempts: int | None = self.max_attempts
        env_mode, env_attempts = os.environ.get("AWS_RETRY_MODE"), os.environ.get("AWS_MAX_ATTEMPTS")
        if mode is None and env_mode:
            mode = parse_retry_mode(env_mode, "env AWS_RETRY_MODE")
        if attempts is None and env_attempts:
            attempts = parse_max_attempts(env_attempts, "env AWS_MAX_ATTEMPTS")
        if mode is None or attempts is None:
            scoped = self.session()._session.get_scoped_config()
            where = f"AWS profile {self.profile or 'default'!r}"
            if mode is None and scoped.get("retry_mode"):
                mode = parse_retry_mode(scoped["retry_mode"], where)
            if attempts is None and scoped.get("max_attempts"):
                attempts = parse_max_attempts(scoped["max_attempts"], where)
        return {"mode": mode or DEFAULT_RETRY_MODE, "total_max_attempts": attempts or DEFAULT_MAX_ATTEMPTS}

    def botocore_config(self, **extra: Any) -> Config:
        from botocore.config import Config

        return Config(retries=self.retries(), user_agent_extra="dsqlops", **extra)  # type: ignore[arg-type]

    def client(self, service: str, region: str | None = None, **extra: Any) -> Any:
        """A boto3 client for ``service`` in ``region`` (default: the context's region)."""
        r = region or self.region
        if not r:
            raise missing_region(self.profile, service)
        kwargs: dict[str, Any] = {"region_name": r, "config": self.botocore_config(**extra)}
        if self.endpoint_url:
            kwargs["endpoint_url"] = validate_endpoint_url(self.endpoint_url, "--endpoint-url")
        try:
            return self.session().client(service, **kwargs)  # type: ignore[call-overload]
        except ValueError as e:  # botocore's "Invalid endpoint: …" (a URL urlsplit accepts but it does not)
            if "endpoint" not in str(e).lower():
                raise
            if self.endpoint_url:
                raise UsageError(f"cannot use endpoint URL {self.endpoint_url!r}: {e}",
                                 hint=ENDPOINT_URL_HINT) from None
            # not ours: botocore read it from AWS_ENDPOINT_URL[_<SERVICE>] or the AWS config file
            names = (f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}", "AWS_ENDPOINT_URL")
            where = next((f"env {n}" for n in names if os.environ.get(n)), "the AWS config file (endpoint_url)")
            raise ConfigError(f"cannot use the endpoint URL from {where}: {e}", hint=ENDPOINT_URL_HINT) from None

    def dsql(self, region: str | None = None) -> AuroraDSQLClient:
        return self.client("dsql", region)

    def cloudwatch(self, region: str | None = None) -> CloudWatchClient:
        return self.client("cloudwatch", region)

    def ce(self) -> CostExplorerClient:
        """Cost Explorer: one endpoint, in us-east-1, whatever the context's region."""
        return self.client("ce", "us-east-1")

    def pricing(self, region: str | None = None) -> PricingClient:
        return self.client("pricing", region)

    def sts(self, region: str | None = None) -> STSClient:
        return self.client("sts", region)

    def iam(self, region: str | None = None) -> IAMClient:
        return self.client("iam", region)

    def credentials(self) -> Any:
        """Frozen credentials, or a ConfigError that says how to provide them."""
        creds = self.session().get_credentials()
        if creds is None:
            raise ConfigError(
                "no AWS credentials found",
                hint="configure credentials (aws configure / SSO / an instance role), pass --profile, "
                "or use the sandbox: eval \"$(dsqlops sandbox env)\"",
            )
        frozen = creds.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise ConfigError("the AWS credentials found are incomplete (no access key or secret)")
        return frozen


def profile_error(profile: str | None) -> ConfigError:
    return ConfigError(f"AWS profile {profile!r} is not configured",
                       hint="check ~/.aws/config (or AWS_CONFIG_FILE), or pass another --profile")


def profile_region(profile: str | None) -> str | None:
    """The region an AWS profile names; None when it names none or does not exist (the caller that
    needs a region reports it with :func:`missing_region`, which tells the two apart).

    With ``profile=None`` this is the profile boto3 would pick (AWS_PROFILE, else ``default``)."""
    import botocore.exceptions
    import botocore.session

    try:
        region = botocore.session.Session(profile=profile).get_config_variable("region")
    except botocore.exceptions.ProfileNotFound:
        return None
    return str(region) if region else None


def check_profile(profile: str | None) -> None:
    """A ConfigError when the AWS profile boto3 would use (``profile``, else AWS_PROFILE) does not exist."""
    import botocore.exceptions
    import botocore.session

    try:
        botocore.session.Session(profile=profile).get_scoped_config()
    except botocore.exceptions.ProfileNotFound:
        raise profile_error(profile or os.environ.get("AWS_PROFILE")) from None


def missing_region(profile: str | None, what: str = "") -> ConfigError:
    """The error for "no region to use": an AWS profile that does not exist is named as such."""
    try:
        check_profile(profile)
    except ConfigError as e:
        return e
    return ConfigError(f"no AWS region{f' for {what}' if what else ''}",
                       hint="pass --region, set DSQLOPS_REGION or AWS_REGION, set region in your AWS profile, "
                       "or name the cluster by endpoint host or ARN")


def parse_retry_mode(value: Any, source: str) -> str:
    mode = str(value).strip().lower()
    if mode not in RETRY_MODES:
        raise ConfigError(f"retry_mode {value!r} (from {source}) must be one of {', '.join(RETRY_MODES)}")
    return mode


def parse_max_attempts(value: Any, source: str) -> int:
    """Total attempts, the first included (botocore's ``total_max_attempts``; AWS_MAX_ATTEMPTS means the same)."""
    try:
        if isinstance(value, bool):
            raise ValueError
        n = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"max_attempts must be a whole number (from {source}): {value!r}") from None
    if not 1 <= n <= MAX_ATTEMPTS_LIMIT:
        raise ConfigError(f"max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT} (from {source}): {n}")
    return n


def validate_endpoint_url(value: str, source: str) -> str:
    """An endpoint URL botocore can use: http(s)://host[:port][/path], nothing else."""
    from urllib.parse import urlsplit

    hint = ENDPOINT_URL_HINT
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise UsageError(f"endpoint URL {value!r} (from {source}) is not valid: {e}", hint=hint) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"endpoint URL {value!r} (from {source}) must start with http:// or https:// and "
                         "name a host", hint=hint)
    return value


#: A service message longer than this is cut: an error is one line (a proxy may answer with a page).
MESSAGE_MAX_CHARS = 300


def _one_line(text: str) -> str:
    """An error message on one line: an HTML error page (a proxy, a mock) is named, not printed."""
    flat = " ".join(str(text).split())
    if flat.lower().startswith(("<!doctype", "<html")):
        import re

        title = re.search(r"<title>(.*?)</title>", flat, re.IGNORECASE)
        return f"an HTML page ({title.group(1).strip() if title else 'no title'}) instead of an AWS error"
    return flat if len(flat) <= MESSAGE_MAX_CHARS else flat[:MESSAGE_MAX_CHARS - 1] + "…"


def error_code(exc: BaseException) -> str | None:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        return resp.get("Error", {}).get("Code")
    return None


def translate_client_error(exc: BaseException, *, what: str = "") -> Exception:
    """Map a botocore ``ClientError`` (or connection error) to a dsqlops error, keeping the
    AWS error code and request id. Returns the exception to raise."""
    import botocore.exceptions as bex

    prefix = f"{what}: " if what else ""
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return ConfigError(f"{prefix}no usable AWS credentials ({exc})")
    if isinstance(exc, bex.NoRegionError):
        return ConfigError(f"{prefix}no AWS region", hint="pass --region or set AWS_REGION")
    if isinstance(exc, bex.ParamValidationError):
        return UsageError(f"{prefix}{exc}")
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectionClosedError | bex.ReadTimeoutError
                  | bex.ConnectTimeoutError):
        return ServiceError(f"{prefix}cannot reach the AWS endpoint: {exc}", code="ConnectionError")
    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code") or "Unknown"
        msg = _one_line(err.get("Message") or str(exc))
        rid = exc.response.get("ResponseMetadata", {}).get("RequestId")
        text = f"{prefix}{code}: {msg}" + (f" (request id {rid})" if rid else "")
        if code in ("ResourceNotFoundException", "ResourceNotFound", "NotFoundException"):
            return NotFoundError(text, code=code, request_id=rid)
        if code == "ConflictException":
            return ConflictError(text, code=code, request_id=rid)
        if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
                    "InvalidClientTokenId", "ExpiredTokenException", "ExpiredToken"):
            return ServiceError(text, code=code, request_id=rid,
                                hint="check the IAM permissions listed in the README for this command")
        if code == "ValidationException":
            return UsageError(text)
        return ServiceError(text, code=code, request_id=rid)
    if isinstance(exc, bex.BotoCoreError):
        return ServiceError(f"{prefix}{exc}")
    return exc if isinstance(exc, Exception) else ServiceError(str(exc))


@contextlib.contextmanager
def aws_errors(what: str = "") -> Iterator[None]:
    """``with aws_errors("GetCluster"): client.get_cluster(...)`` → dsqlops errors."""
    import botocore.exceptions as bex

    try:
        yield
    except (bex.ClientError, bex.BotoCoreError) as e:
        raise translate_client_error(e, what=what) from None


def per_region(tasks: Mapping[Any, Callable[[], Any]], *, workers: int,
               failures: dict[Any, str] | None = None) -> dict[Any, Any]:
    """Run one task per region on at most ``workers`` threads; results by key, in the tasks' order.

    Without ``failures`` the first failing task's error (in the tasks' order) is raised. With it, a
    task that fails with an AWS or dsqlops error (access denied, a region not enabled for the account,
    an unreachable endpoint, throttling past botocore's retries) is recorded there with its one-line
    message and the others still answer. Anything else is a bug and is raised.
    """
    import botocore.exceptions as bex

    from dsqlops.errors import DsqlopsError

    results: dict[Any, Any] = {}
    if not tasks:
        return results
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(tasks)))) as pool:
        futures = {k: pool.submit(fn) for k, fn in tasks.items()}
        for k, f in futures.items():
            try:
                results[k] = f.result()
            except (DsqlopsError, bex.ClientError, bex.BotoCoreError) as e:
                if failures is None:
                    raise
                err = translate_client_error(e) if not isinstance(e, DsqlopsError) else e
                failures[k] = str(err)
    return results
