"""The only place that builds boto3 sessions and clients, and maps ``ClientError``.

Region, AWS profile and endpoint URL come from :class:`dsqlops.config.Settings`; the standard
``AWS_*`` variables keep working because boto3 reads them. The retry mode is set explicitly
(``standard``, 5 attempts): botocore's default changed across versions (RELIABILITY §1.1).

``--debug`` never turns on botocore's wire logging: it prints the session token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsqlops.errors import ConfigError, ConflictError, NotFoundError, ServiceError, UsageError

if TYPE_CHECKING:
    import boto3
    from botocore.config import Config

DEFAULT_MAX_ATTEMPTS = 5
#: Error codes that mean "throttled, try again later", across services and protocols (CloudWatch is
#: awsQueryCompatible and answers ``Throttling``; DSQL answers ``ThrottlingException``).
THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "TooManyRequestsException",
                              "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException"})
#: The Price List API exists only in these regions (FACTS §5.4).
PRICING_REGIONS = ("us-east-1", "eu-central-1", "ap-south-1")


@dataclass
class AwsContext:
    """How to reach AWS (or the sandbox): region, AWS profile, endpoint URL."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    _sessions: dict[str | None, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> AwsContext:
        return cls(region=settings.get("region"), profile=settings.get("aws_profile"),
                   endpoint_url=settings.get("endpoint_url"))

    def session(self) -> boto3.Session:
        import boto3
        import botocore.exceptions

        key = self.profile
        if key not in self._sessions:
            try:
                self._sessions[key] = boto3.Session(profile_name=self.profile)
            except botocore.exceptions.ProfileNotFound:
                raise ConfigError(f"AWS profile {self.profile!r} is not configured",
                                  hint="check ~/.aws/config or pass another --profile") from None
        return self._sessions[key]

    def botocore_config(self, **extra: Any) -> Config:
        from botocore.config import Config

        return Config(retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                      user_agent_extra="dsqlops", **extra)

    def client(self, service: str, region: str | None = None, **extra: Any) -> Any:
        """A boto3 client for ``service`` in ``region`` (default: the context's region)."""
        r = region or self.region
        if not r:
            raise ConfigError(
                f"no AWS region for {service}",
                hint="pass --region, set DSQLOPS_REGION or AWS_REGION, or set region in your profile",
            )
        kwargs: dict[str, Any] = {"region_name": r, "config": self.botocore_config(**extra)}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        try:
            return self.session().client(service, **kwargs)  # type: ignore[call-overload]
        except ValueError as e:  # botocore: "Invalid endpoint: …" (--endpoint-url, AWS_ENDPOINT_URL)
            raise ConfigError(f"cannot make a {service} client: {e}",
                              hint="an endpoint URL looks like https://host[:port]") from None

    def dsql(self, region: str | None = None) -> Any:
        return self.client("dsql", region)

    def cloudwatch(self, region: str | None = None) -> Any:
        return self.client("cloudwatch", region)

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
        msg = err.get("Message") or str(exc)
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
