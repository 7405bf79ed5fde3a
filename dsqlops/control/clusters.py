"""Clusters: create (idempotent), list (bounded concurrency), show, update, tag, delete, policy, streams.

Every function takes a boto3 ``dsql`` client for the cluster's region and returns dataclasses.

**Endpoint normalisation.** The real service returns ``{id}.dsql.{region}.on.aws``; moto 5.2.5
returns ``{id}.{region}.on.aws`` (docs/dsql-facts.md §1.6.2), which would break TLS host checks and token
signing. Whenever the returned endpoint lacks ``.dsql`` (or is missing) we derive it as
``{id}.dsql.{region}.on.aws``; a well-formed endpoint (including ``dsql-fips`` variants) is kept.

**Deterministic clientToken** (:func:`client_token_for`): ``dsqlops-v1-`` followed by the first
48 hex digits of SHA-256 over the canonical JSON (sorted keys, no spaces) of the *normalised*
request: region, deletion protection, KMS key, tags (sorted), witness Region and sorted peer ARNs,
and the policy re-serialised canonically. Two runs that ask for the same cluster send the same
token, so a cron re-run answers with the cluster the first run made instead of creating a second
one. To deliberately create another identical cluster, add a distinguishing tag or pass an explicit
``--client-token``. Update/delete/policy calls keep botocore's per-call token: reusing one across
*separate* requests would make a later identical request (enable → disable → enable) a silent no-op.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsqlops.aws import aws_errors, error_code
from dsqlops.errors import ConflictError, NotFoundError, ServiceError, UsageError
from dsqlops.validate import CLUSTER_ARN_RE, CLUSTER_ID_RE, validate_region, validate_tag_key

if TYPE_CHECKING:
    from mypy_boto3_dsql import AuroraDSQLClient

log = logging.getLogger(__name__)

#: The status enum of GetCluster (docs/dsql-facts.md §1.3).
STATUSES = ("CREATING", "ACTIVE", "IDLE", "INACTIVE", "UPDATING", "DELETING", "DELETED", "FAILED",
            "PENDING_SETUP", "PENDING_DELETE")
AWS_OWNED_KMS_KEY = "AWS_OWNED_KMS_KEY"
KMS_KEY_RE = re.compile(r"[a-zA-Z0-9:/_-]{1,2048}")
POLICY_MAX_CHARS = 20480
MAX_TAGS = 200
LIST_WORKERS = 8
#: Regions listed at once by ``cluster list --all-regions`` and ``cost`` (each with its own LIST_WORKERS).
REGION_WORKERS = 4
STREAM_ID_RE = CLUSTER_ID_RE


# --------------------------------------------------------------------------- shapes


@dataclass
class Cluster:
    """One cluster as dsqlops shows it (snake_case; times are UTC datetimes)."""

    id: str
    arn: str | None
    region: str
    status: str
    endpoint: str
    deletion_protection: bool | None = None
    creation_time: dt.datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)
    encryption_type: str | None = None
    kms_key_arn: str | None = None
    encryption_status: str | None = None
    witness_region: str | None = None
    peers: list[str] = field(default_factory=list)
    #: Set only in listings when describing this cluster failed (throttled past every retry…).
    error: str | None = None

    @property
    def other_peers(self) -> list[str]:
        """The peers but this cluster itself: the service lists a cluster among its own
        ``multiRegionProperties.clusters``."""
        return [p for p in self.peers if p != self.arn]


@dataclass
class Stream:
    id: str
    cluster_id: str
    arn: str | None
    status: str
    creation_time: dt.datetime | None = None
    ordering: str | None = None
    format: str | None = None
    target: dict[str, Any] | None = None
    status_reason: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Policy:
    cluster_id: str
    version: str | None
    policy: Any  # the parsed JSON document (or the raw text if the service holds non-JSON)


@dataclass
class ClusterDetail:
    """``cluster show``: everything about one cluster in one view."""

    cluster: Cluster
    policy: Any = None
    policy_version: str | None = None
    vpc_endpoint_service_name: str | None = None
    vpc_endpoint: str | None = None
    streams: list[Stream] = field(default_factory=list)
    #: Parts we were not allowed to read (AccessDenied), so the view is partial; say so.
    unavailable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dsqlops.output import to_jsonable

        d = to_jsonable(self.cluster)
        d.pop("error", None)
        d.update({
            "policy": self.policy,
            "policy_version": self.policy_version,
            "vpc_endpoint_service_name": self.vpc_endpoint_service_name,
            "vpc_endpoint": self.vpc_endpoint,
            "streams": [to_jsonable(s) for s in self.streams],
            "unavailable": list(self.unavailable),
        })
        return d


# --------------------------------------------------------------------------- helpers


def normalize_endpoint(endpoint: str | None, cluster_id: str, region: str) -> str:
    """The real endpoint format, whatever the service (or moto) answered (see module doc)."""
    if endpoint and ".dsql" in endpoint and endpoint.startswith(f"{cluster_id}."):
        return endpoint
    return f"{cluster_id}.dsql.{region}.on.aws"


def hint_name(cluster_id: str, region: str) -> str:
    """How printed commands (resume hints, remedies) name a cluster: its endpoint host, which
    carries the Region, so the command works whatever the reader's default Region is."""
    return normalize_endpoint(None, cluster_id, region)


def _client_region(client: AuroraDSQLClient) -> str | None:
    meta = getattr(client, "meta", None)
    region = getattr(meta, "region_name", None)
    return region if isinstance(region, str) else None


def _hint_name(client: AuroraDSQLClient, cluster_id: str) -> str:
    region = _client_region(client)
    return hint_name(cluster_id, region) if region else cluster_id


def _region_of(arn: str | None, fallback: str) -> str:
    m = CLUSTER_ARN_RE.fullmatch(arn or "")
    return m["region"] if m else fallback


def cluster_from_api(resp: Mapping[str, Any], region: str) -> Cluster:
    cid = resp["identifier"]
    reg = _region_of(resp.get("arn"), region)
    enc = resp.get("encryptionDetails") or {}
    mrp = resp.get("multiRegionProperties") or {}
    return Cluster(
        id=cid, arn=resp.get("arn"), region=reg, status=resp.get("status", "UNKNOWN"),
        endpoint=normalize_endpoint(resp.get("endpoint"), cid, reg),
        deletion_protection=resp.get("deletionProtectionEnabled"),
        creation_time=resp.get("creationTime"),
        tags=dict(resp.get("tags") or {}),
        encryption_type=enc.get("encryptionType"), kms_key_arn=enc.get("kmsKeyArn"),
        encryption_status=enc.get("encryptionStatus"),
        witness_region=mrp.get("witnessRegion"), peers=list(mrp.get("clusters") or []),
    )


def stream_from_api(resp: Mapping[str, Any]) -> Stream:
    return Stream(
        id=resp["streamIdentifier"], cluster_id=resp["clusterIdentifier"], arn=resp.get("arn"),
        status=resp.get("status", "UNKNOWN"), creation_time=resp.get("creationTime"),
        ordering=resp.get("ordering"), format=resp.get("format"),
        target=resp.get("targetDefinition"), status_reason=resp.get("statusReason"),
        tags=dict(resp.get("tags") or {}),
    )


def normalize_policy(text: str, *, source: str = "policy") -> str:
    """Validate a resource policy (a JSON *object*) and return its canonical compact text."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{source} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{source} must be a JSON object (an IAM policy document), not {type(doc).__name__}")
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(canon) > POLICY_MAX_CHARS:
        raise UsageError(f"{source} is {len(canon)} characters; DSQL accepts at most {POLICY_MAX_CHARS}")
    return canon


def read_policy_file(path: str) -> str:
    """Read and validate a policy file before any API call."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read policy file {path}: {e}") from None
    return normalize_policy(text, source=f"policy file {path}")


def validate_kms_key(key: str) -> str:
    if not KMS_KEY_RE.fullmatch(key or ""):
        raise UsageError(f"not a KMS key id, ARN or alias: {key!r}",
                         hint=f"use a key id, key ARN, alias/NAME, or {AWS_OWNED_KMS_KEY} for an AWS-owned key")
    return key


def validate_peer_arn(arn: str) -> str:
    if not CLUSTER_ARN_RE.fullmatch(arn or ""):
        raise UsageError(f"--peer must be a cluster ARN: {arn!r}",
                         hint="arn:aws:dsql:<region>:<account>:cluster/<id>")
    return arn


def validate_multi_region(region: str, witness_region: str | None, peers: Iterable[str]) -> None:
    """A cluster's peers live in other Regions, and the witness Region is none of them (a witness
    in a peer's Region would not survive that Region's loss, the point of the witness)."""
    peer_regions = {p: _region_of(p, "") for p in peers}
    for arn, r in sorted(peer_regions.items()):
        if r == region:
            raise UsageError(f"--peer {arn} is in the cluster's own Region ({region}); a peer must be in "
                             "another Region",
                             hint="name the peer cluster created in the other Region of the pair")
    if witness_region is not None:
        if witness_region == region:
            raise UsageError(f"the witness Region must differ from the cluster's Region ({region})")
        same = sorted(a for a, r in peer_regions.items() if r == witness_region)
        if same:
            raise UsageError(f"the witness Region {witness_region} is the Region of peer {same[0]}; "
                             "the witness must be a third Region",
                             hint="pick a witness Region where neither cluster of the pair lives")


def validate_stream_id(value: str) -> str:
    if not STREAM_ID_RE.fullmatch(value or ""):
        raise UsageError(f"not a stream id (26 lowercase letters/digits): {value!r}")
    return value


def _tags_dict(tags: Iterable[tuple[str, str]] | dict[str, str] | None) -> dict[str, str]:
    items = tags.items() if isinstance(tags, dict) else (tags or [])
    out: dict[str, str] = {}
    for k, v in items:
        if k in out and out[k] != v:
            raise UsageError(f"tag {k!r} given twice with different values")
        out[k] = v
    if len(out) > MAX_TAGS:
        raise UsageError(f"at most {MAX_TAGS} tags per cluster ({len(out)} given)")
    return out


# --------------------------------------------------------------------------- create


@dataclass(frozen=True)
class CreateRequest:
    """A normalised CreateCluster request. ``policy`` is canonical JSON text (normalize_policy)."""

    region: str
    deletion_protection: bool = True
    kms_key: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    witness_region: str | None = None
    peers: tuple[str, ...] = ()
    policy: str | None = None
    client_token: str | None = None

    @classmethod
    def build(cls, *, region: str, deletion_protection: bool = True, kms_key: str | None = None,
              tags: Iterable[tuple[str, str]] | dict[str, str] | None = None,
              witness_region: str | None = None, peers: Iterable[str] = (), policy: str | None = None,
              client_token: str | None = None) -> CreateRequest:
        validate_region(region)
        tag_map = _tags_dict(tags)
        for k in tag_map:
            validate_tag_key(k)
        if kms_key is not None:
            validate_kms_key(kms_key)
        peer_list = sorted({validate_peer_arn(p) for p in peers})
        if witness_region is not None:
            validate_region(witness_region)
        validate_multi_region(region, witness_region, peer_list)
        if peer_list and witness_region is None:
            raise UsageError("a multi-Region cluster needs --witness-region as well as --peer")
        if client_token is not None and not re.fullmatch(r"[!-~]{1,128}", client_token):
            raise UsageError("--client-token must be 1-128 printable ASCII characters without spaces")
        return cls(region=region, deletion_protection=deletion_protection, kms_key=kms_key,
                   tags=tuple(sorted(tag_map.items())), witness_region=witness_region,
                   peers=tuple(peer_list), policy=policy, client_token=client_token)

    def multi_region(self) -> dict[str, Any] | None:
        if self.witness_region is None and not self.peers:
            return None
        mrp: dict[str, Any] = {}
        if self.witness_region is not None:
            mrp["witnessRegion"] = self.witness_region
        if self.peers:
            mrp["clusters"] = list(self.peers)
        return mrp


def client_token_for(req: CreateRequest) -> str:
    """The deterministic clientToken of a create request (see the module docstring)."""
    canonical = {
        "v": 1,
        "region": req.region,
        "deletionProtectionEnabled": req.deletion_protection,
        "kmsEncryptionKey": req.kms_key,
        "tags": [list(t) for t in req.tags],
        "multiRegionProperties": req.multi_region(),
        "policy": req.policy,
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "dsqlops-v1-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:48]


def create_params(req: CreateRequest) -> dict[str, Any]:
    """The exact CreateCluster parameters dsqlops sends (also what ``--dry-run`` prints)."""
    params: dict[str, Any] = {"deletionProtectionEnabled": req.deletion_protection,
                              "clientToken": req.client_token or client_token_for(req)}
    if req.kms_key is not None:
        params["kmsEncryptionKey"] = req.kms_key
    if req.tags:
        params["tags"] = dict(req.tags)
    mrp = req.multi_region()
    if mrp is not None:
        params["multiRegionProperties"] = mrp
    if req.policy is not None:
        params["policy"] = req.policy
    return params


def create_cluster(client: AuroraDSQLClient, req: CreateRequest) -> Cluster:
    """CreateCluster with the deterministic token; a re-run returns the same cluster."""
    params = create_params(req)
    log.debug("CreateCluster in %s with clientToken %s", req.region, params["clientToken"])
    try:
        with aws_errors("CreateCluster"):
            resp = client.create_cluster(**params)
    except ConflictError as e:
        raise ConflictError(
            f"{e.message}", code=e.code, request_id=e.request_id,
            hint="this clientToken was already used for a different request (AWS keeps tokens for a "
            "while): change a tag, or pass --client-token to make a deliberately new cluster",
        ) from None
    except ServiceError as e:
        if e.code == "ServiceQuotaExceededException":
            raise ServiceError(
                e.message, code=e.code, request_id=e.request_id,
                hint="the account's cluster quota for this Region is reached (default 20 single-Region, "
                "5 multi-Region): delete unused clusters (`dsqlops cluster list`) or request a quota "
                "increase in Service Quotas",
            ) from None
        raise
    cluster = cluster_from_api(resp, req.region)
    if not cluster.tags and req.tags:  # CreateCluster's response carries no tags
        cluster.tags = dict(req.tags)
    if cluster.status in ("DELETING", "DELETED", "PENDING_DELETE"):
        raise ConflictError(
            f"the clientToken of this request belongs to cluster {cluster.id}, which is {cluster.status}",
            code="ConflictException",
            hint="an identical earlier create made a cluster that is now being deleted; add a tag or pass "
            "--client-token to create a new one",
        )
    return cluster


# --------------------------------------------------------------------------- read


def get_cluster(client: AuroraDSQLClient, cluster_id: str, region: str) -> Cluster:
    with aws_errors(f"GetCluster {cluster_id}"):
        resp = client.get_cluster(identifier=cluster_id)
    return cluster_from_api(resp, region)


def list_cluster_ids(client: AuroraDSQLClient) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    with aws_errors("ListClusters"):
        for page in client.get_paginator("list_clusters").paginate():
            for c in page.get("clusters", []):
                out.append((c["identifier"], c.get("arn")))
    return out


def list_clusters(client: AuroraDSQLClient, region: str, *, status: Iterable[str] | None = None,
                  workers: int = LIST_WORKERS) -> list[Cluster]:
    """ListClusters, then GetCluster per id on at most ``workers`` threads.

    Throttling is retried by botocore alone (the client's retry config, :mod:`dsqlops.aws`); a
    cluster that still cannot be described comes back with ``status="UNKNOWN"`` and ``error`` set
    (the caller decides what that means); a cluster deleted between the two calls is dropped.
    """
    import botocore.exceptions as bex

    wanted = {s.upper() for s in status} if status else None
    ids = list_cluster_ids(client)
    log.debug("ListClusters in %s: %d clusters; describing on %d threads", region, len(ids), workers)

    def describe(item: tuple[str, str | None]) -> Cluster | None:
        cid, arn = item
        try:
            resp = client.get_cluster(identifier=cid)
        except bex.ClientError as e:
            if error_code(e) in ("ResourceNotFoundException", "ResourceNotFound"):
                return None
            from dsqlops.aws import translate_client_error

            err = translate_client_error(e, what="GetCluster")
            return Cluster(id=cid, arn=arn, region=_region_of(arn, region), status="UNKNOWN",
                           endpoint=normalize_endpoint(None, cid, _region_of(arn, region)), error=str(err))
        except bex.BotoCoreError as e:
            return Cluster(id=cid, arn=arn, region=_region_of(arn, region), status="UNKNOWN",
                           endpoint=normalize_endpoint(None, cid, _region_of(arn, region)), error=str(e))
        return cluster_from_api(resp, region)

    if not ids:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(ids)))) as pool:
        results = list(pool.map(describe, ids))
    clusters = [c for c in results if c is not None]
    if wanted is not None:
        clusters = [c for c in clusters if c.status in wanted or c.error is not None]
    clusters.sort(key=lambda c: (c.creation_time or dt.datetime.min.replace(tzinfo=dt.UTC), c.id))
    return clusters


@dataclass
class RegionFailure:
    region: str
    error: str


@dataclass
class Fleet:
    """``cluster list --all-regions``: every Region asked, the clusters found, the Regions that failed."""

    regions: list[str]
    clusters: list[Cluster] = field(default_factory=list)
    failed_regions: list[RegionFailure] = field(default_factory=list)


def list_fleet(clients: Mapping[str, AuroraDSQLClient], *, status: Iterable[str] | None = None,
               workers: int = LIST_WORKERS, region_workers: int = REGION_WORKERS) -> Fleet:
    """:func:`list_clusters` in every Region of ``clients`` (Region → dsql client, built by the caller
    beforehand: creating boto3 clients is not thread-safe), at most ``region_workers`` Regions at a
    time, each describing on at most ``workers`` threads. A Region that fails (access denied, not
    enabled for the account, unreachable, throttled past botocore's retries) is reported with its
    error; the others still answer."""
    import botocore.exceptions as bex

    from dsqlops.aws import translate_client_error
    from dsqlops.errors import DsqlopsError

    statuses = list(status) if status else None

    def one(region: str) -> tuple[str, list[Cluster], str | None]:
        try:
            return region, list_clusters(clients[region], region, status=statuses, workers=workers), None
        except DsqlopsError as e:
            return region, [], e.message
        except (bex.ClientError, bex.BotoCoreError) as e:
            return region, [], str(translate_client_error(e, what="ListClusters"))
        except Exception as e:  # noqa: BLE001 - one Region's failure, whatever it is, must not hide the others
            return region, [], f"{type(e).__name__}: {e}"

    regions = sorted(clients)
    fleet = Fleet(regions=regions)
    if not regions:
        return fleet
    with ThreadPoolExecutor(max_workers=max(1, min(region_workers, len(regions)))) as pool:
        for region, found, error in pool.map(one, regions):
            fleet.clusters.extend(found)
            if error is not None:
                log.debug("ListClusters in %s failed: %s", region, error)
                fleet.failed_regions.append(RegionFailure(region, error))
    return fleet


def _optional(part: str, unavailable: list[str], fn: Callable[[], Any]) -> Any:
    """Run an optional read for ``show``: NotFound → None; AccessDenied → None + note."""
    try:
        return fn()
    except NotFoundError:
        return None
    except ServiceError as e:
        if e.code in ("AccessDeniedException", "AccessDenied"):
            unavailable.append(f"{part}: access denied")
            return None
        raise


def show_cluster(client: AuroraDSQLClient, cluster_id: str, region: str) -> ClusterDetail:
    """GetCluster + tags + policy (if any) + VPC endpoint service name + streams."""
    cluster = get_cluster(client, cluster_id, region)
    detail = ClusterDetail(cluster=cluster)
    if cluster.arn:
        tags = _optional("tags", detail.unavailable, lambda: list_tags(client, cluster.arn or ""))
        if tags is not None:
            cluster.tags = tags
    pol = _optional("policy", detail.unavailable, lambda: get_policy(client, cluster_id))
    if pol is not None:
        detail.policy, detail.policy_version = pol.policy, pol.version

    def vpc() -> dict[str, Any]:
        with aws_errors("GetVpcEndpointServiceName"):
            return dict(client.get_vpc_endpoint_service_name(identifier=cluster_id))

    v = _optional("vpc_endpoint_service_name", detail.unavailable, vpc)
    if v is not None:
        detail.vpc_endpoint_service_name = v.get("serviceName")
        ep = v.get("clusterVpcEndpoint")
        if ep and ".dsql" not in ep:  # moto's malformed endpoint (docs/dsql-facts.md §1.6.9)
            ep = cluster.endpoint
        detail.vpc_endpoint = ep
    streams = _optional("streams", detail.unavailable, lambda: list_streams(client, cluster_id))
    detail.streams = streams or []
    return detail


# --------------------------------------------------------------------------- update / delete


@dataclass(frozen=True)
class UpdateRequest:
    cluster_id: str
    deletion_protection: bool | None = None
    kms_key: str | None = None
    witness_region: str | None = None
    peers: tuple[str, ...] | None = None  # None = unchanged; () = remove every peer

    def is_empty(self) -> bool:
        return (self.deletion_protection is None and self.kms_key is None and self.witness_region is None
                and self.peers is None)


def update_params(req: UpdateRequest, current: Cluster | None = None, *, region: str) -> dict[str, Any]:
    """UpdateCluster parameters. multiRegionProperties is a full replacement, so a part the caller
    did not name (witness or peers) is filled from ``current``. ``region`` is the cluster's Region
    (``current.region`` when given): peers and witness are checked against it."""
    if req.is_empty():
        raise UsageError("nothing to update",
                         hint="pass --deletion-protection/--no-deletion-protection, --kms-key, "
                         "--witness-region or --peer/--no-peers")
    params: dict[str, Any] = {"identifier": req.cluster_id}
    if req.deletion_protection is not None:
        params["deletionProtectionEnabled"] = req.deletion_protection
    if req.kms_key is not None:
        params["kmsEncryptionKey"] = validate_kms_key(req.kms_key)
    if req.witness_region is not None or req.peers is not None:
        witness = req.witness_region
        if witness is None and current is not None:
            witness = current.witness_region
        peers = list(req.peers) if req.peers is not None else (list(current.peers) if current else [])
        for p in peers:
            validate_peer_arn(p)
        if witness is not None:
            validate_region(witness)
        checked = current.other_peers if current is not None and req.peers is None else peers
        validate_multi_region(current.region if current is not None else region, witness, checked)
        mrp: dict[str, Any] = {"clusters": sorted(set(peers))}
        if witness is not None:
            mrp["witnessRegion"] = witness
        params["multiRegionProperties"] = mrp
    return params


def update_cluster(client: AuroraDSQLClient, req: UpdateRequest, region: str) -> Cluster:
    current = None
    if req.witness_region is not None or req.peers is not None:
        update_params(req, region=region)  # what was given is checked before any call
        current = get_cluster(client, req.cluster_id, region)
    params = update_params(req, current, region=region)
    with aws_errors(f"UpdateCluster {req.cluster_id}"):
        client.update_cluster(**params)
    return get_cluster(client, req.cluster_id, region)


@dataclass
class DeleteResult:
    id: str
    status: str
    protection_disabled: bool = False
    #: Multi-Region peers of the deleted cluster (not deleted by this call).
    peers: list[str] = field(default_factory=list)


def _protected_error(cluster_id: str, region: str) -> UsageError:
    return UsageError(
        f"cluster {cluster_id} has deletion protection enabled; not deleting it",
        hint="to delete it anyway, re-run with --disable-deletion-protection (dsqlops turns protection "
        f"off first), or run `dsqlops cluster update {hint_name(cluster_id, region)} --no-deletion-protection`",
    )


def _protection_note(cluster_id: str, region: str) -> str:
    return (" (deletion protection was already turned off by this run; turn it back on with "
            f"`dsqlops cluster update {hint_name(cluster_id, region)} --deletion-protection`)")


def delete_plan(cluster_id: str, *, disable_protection: bool) -> list[dict[str, Any]]:
    """The API calls ``delete`` makes, for ``--dry-run``."""
    calls: list[dict[str, Any]] = [{"operation": "GetCluster", "params": {"identifier": cluster_id}}]
    if disable_protection:
        calls.append({"operation": "UpdateCluster", "when": "deletion protection is on",
                      "params": {"identifier": cluster_id, "deletionProtectionEnabled": False}})
    calls.append({"operation": "DeleteCluster", "params": {"identifier": cluster_id}})
    return calls


def delete_cluster(client: AuroraDSQLClient, cluster_id: str, region: str, *, disable_protection: bool = False,
                   on_step: Callable[[str], None] | None = None) -> DeleteResult:
    """Delete a cluster. A protected cluster is refused unless ``disable_protection``; then
    UpdateCluster(deletionProtectionEnabled=False) runs first and ``on_step`` is told so."""
    current = get_cluster(client, cluster_id, region)
    log.debug("DeleteCluster %s (protection %s)", cluster_id, current.deletion_protection)
    disabled = False
    if current.deletion_protection:
        if not disable_protection:
            raise _protected_error(cluster_id, region)
        with aws_errors(f"UpdateCluster {cluster_id}"):
            client.update_cluster(identifier=cluster_id, deletionProtectionEnabled=False)
        disabled = True
        if on_step:
            on_step(f"deletion protection disabled on cluster {cluster_id}")
    try:
        with aws_errors(f"DeleteCluster {cluster_id}"):
            resp = client.delete_cluster(identifier=cluster_id)
    except (ConflictError, UsageError) as e:
        note = _protection_note(cluster_id, region) if disabled else ""
        if "protection" in e.message.lower() and not disabled:
            raise _protected_error(cluster_id, region) from None
        raise type(e)(e.message + note, hint=e.hint) from None
    except ServiceError as e:
        if disabled:
            e.message += _protection_note(cluster_id, region)
        raise
    return DeleteResult(id=cluster_id, status=resp.get("status", "DELETING"), protection_disabled=disabled,
                        peers=current.other_peers)


# --------------------------------------------------------------------------- tags


def list_tags(client: AuroraDSQLClient, arn: str) -> dict[str, str]:
    with aws_errors("ListTagsForResource"):
        return dict(client.list_tags_for_resource(resourceArn=arn).get("tags") or {})


def tag_cluster(client: AuroraDSQLClient, arn: str, tags: dict[str, str]) -> dict[str, str]:
    if not tags:
        raise UsageError("no tags given (KEY=VALUE)")
    for k in tags:
        validate_tag_key(k)
    with aws_errors("TagResource"):
        client.tag_resource(resourceArn=arn, tags=tags)
    return list_tags(client, arn)


def untag_cluster(client: AuroraDSQLClient, arn: str, keys: Iterable[str]) -> dict[str, str]:
    key_list = sorted({validate_tag_key(k) for k in keys})
    if not key_list:
        raise UsageError("no tag keys given")
    with aws_errors("UntagResource"):
        client.untag_resource(resourceArn=arn, tagKeys=key_list)
    return list_tags(client, arn)


def cluster_arn(client: AuroraDSQLClient, cluster_id: str, region: str, arn: str | None = None) -> str:
    """The ARN (from the caller's ref when given, else GetCluster)."""
    if arn:
        return arn
    c = get_cluster(client, cluster_id, region)
    if not c.arn:  # pragma: no cover - the API always returns it
        raise ServiceError(f"GetCluster {cluster_id} returned no ARN")
    return c.arn


# --------------------------------------------------------------------------- policy


def _parse_policy(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return text


def get_policy(client: AuroraDSQLClient, cluster_id: str) -> Policy:
    with aws_errors(f"GetClusterPolicy {cluster_id}"):
        resp = client.get_cluster_policy(identifier=cluster_id)
    return Policy(cluster_id=cluster_id, version=resp.get("policyVersion"), policy=_parse_policy(resp.get("policy")))


def _version_conflict(e: ConflictError, cluster_id: str, expected: str | None, name: str) -> ConflictError:
    if expected is None:
        return e
    return ConflictError(
        f"the policy of cluster {cluster_id} is no longer at version {expected} (someone changed it): {e.message}",
        code=e.code, request_id=e.request_id,
        hint=f"read the current one with `dsqlops cluster policy get {name}`, merge, and retry with its version",
    )


def policy_put_params(cluster_id: str, policy: str, expected_version: str | None,
                      bypass_lockout_check: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"identifier": cluster_id, "policy": policy}
    if expected_version is not None:
        params["expectedPolicyVersion"] = expected_version
    if bypass_lockout_check:
        params["bypassPolicyLockoutSafetyCheck"] = True
    return params


def put_policy(client: AuroraDSQLClient, cluster_id: str, policy: str, *, expected_version: str | None = None,
               bypass_lockout_check: bool = False) -> Policy:
    params = policy_put_params(cluster_id, policy, expected_version, bypass_lockout_check)
    try:
        with aws_errors(f"PutClusterPolicy {cluster_id}"):
            resp = client.put_cluster_policy(**params)
    except ConflictError as e:
        raise _version_conflict(e, cluster_id, expected_version, _hint_name(client, cluster_id)) from None
    return Policy(cluster_id=cluster_id, version=resp.get("policyVersion"), policy=_parse_policy(policy))


def delete_policy(client: AuroraDSQLClient, cluster_id: str, *, expected_version: str | None = None) -> Policy:
    params: dict[str, Any] = {"identifier": cluster_id}
    if expected_version is not None:
        params["expectedPolicyVersion"] = expected_version
    try:
        with aws_errors(f"DeleteClusterPolicy {cluster_id}"):
            resp = client.delete_cluster_policy(**params)
    except ConflictError as e:
        raise _version_conflict(e, cluster_id, expected_version, _hint_name(client, cluster_id)) from None
    return Policy(cluster_id=cluster_id, version=resp.get("policyVersion"), policy=None)


# --------------------------------------------------------------------------- streams


def list_streams(client: AuroraDSQLClient, cluster_id: str) -> list[Stream]:
    out: list[Stream] = []
    with aws_errors(f"ListStreams {cluster_id}"):
        for page in client.get_paginator("list_streams").paginate(clusterIdentifier=cluster_id):
            out.extend(stream_from_api(s) for s in page.get("streams", []))
    return out


def get_stream(client: AuroraDSQLClient, cluster_id: str, stream_id: str) -> Stream:
    validate_stream_id(stream_id)
    with aws_errors(f"GetStream {stream_id}"):
        resp = client.get_stream(clusterIdentifier=cluster_id, streamIdentifier=stream_id)
    return stream_from_api(resp)
