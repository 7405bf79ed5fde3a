"""``dsqlops cluster …``: the DSQL control plane."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from dsqlops.cli.common import CliEnv, dry_run_option, output_option, pass_env, timeout_option, yes_option
from dsqlops.errors import UsageError

if TYPE_CHECKING:
    from mypy_boto3_dsql import AuroraDSQLClient

STATUS_CHOICES = ("CREATING", "ACTIVE", "IDLE", "INACTIVE", "UPDATING", "DELETING", "DELETED", "FAILED",
                  "PENDING_SETUP", "PENDING_DELETE", "UNKNOWN")
LIST_COLUMNS = ["id", "status", "endpoint", "deletion_protection", "creation_time", "tags"]


# --------------------------------------------------------------------------- plumbing


def _region(env: CliEnv, ref: Any = None) -> str:
    region = (ref.region if ref is not None else None) or env.settings.get("region")
    if not region:
        from dsqlops.aws import missing_region

        raise missing_region(env.settings.get("aws_profile"))
    return str(region)


def _target(env: CliEnv, value: str) -> tuple[Any, str, Any]:
    """(ClusterRef, region, dsql client) for a cluster named by id, host or ARN."""
    from dsqlops.validate import parse_cluster

    ref = parse_cluster(value)
    region = _region(env, ref)
    return ref.with_region(region), region, env.aws().dsql(region)


def _print_plan(plan: Any) -> None:
    from dsqlops.output import to_jsonable

    sys.stdout.write(json.dumps(to_jsonable(plan), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _info(msg: str) -> None:
    from dsqlops.output import info

    info(msg)


def _parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    from dsqlops.validate import parse_tag

    out: dict[str, str] = {}
    for v in values:
        k, val = parse_tag(v)
        if k in out and out[k] != val:
            raise UsageError(f"tag {k!r} given twice with different values")
        out[k] = val
    return out


def _wait(env: CliEnv, client: AuroraDSQLClient, cluster_id: str, region: str, target: str, timeout: float,
          interval: float, accept_idle: bool = False, *, existed: bool = False, region_named: bool = True) -> Any:
    from dsqlops.control.waits import wait_for
    from dsqlops.output import Progress

    progress = Progress(f"cluster {cluster_id} → {target}", enabled=env.progress, always=True)
    try:
        res = wait_for(client, cluster_id, region=region, target=target, timeout=timeout, interval=interval,
                       accept_idle=accept_idle, on_status=lambda s, _e: progress.update(s), existed=existed,
                       region_named=region_named)
    finally:
        progress.done()
    if res.note:
        _info(f"cluster {cluster_id}: {res.note}")
    return res


def _interval_option(f: Any) -> Any:
    return click.option("--interval", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
                        metavar="SECONDS", help="Seconds between GetCluster polls.")(f)


# --------------------------------------------------------------------------- group


@click.group("cluster")
def cluster() -> None:
    """Create, inspect, update, tag, delete and wait on clusters.

    A cluster is named by id, endpoint host or ARN; the region comes from the host/ARN when
    present, else from --region / the profile / AWS_REGION.

    \b
    Example:
      dsqlops cluster create --tag env=dev --no-deletion-protection --wait
      dsqlops -o json cluster list --status ACTIVE
    """


@cluster.command("create")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@click.option("--deletion-protection/--no-deletion-protection", default=True, show_default=True,
              help="Refuse DeleteCluster until protection is turned off.")
@click.option("--kms-key", default=None, metavar="KEY", help="Customer-managed KMS key id, ARN or alias.")
@click.option("--policy-file", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Resource policy (a JSON object), validated before any call.")
@click.option("--witness-region", default=None, metavar="REGION", help="Multi-Region: the witness Region.")
@click.option("--peer", "peers", multiple=True, metavar="ARN", help="Multi-Region: a peer cluster ARN (repeatable).")
@click.option("--peer-region", default=None, metavar="REGION",
              help="Multi-Region in one plan: also create the peer cluster in REGION and peer the two "
              "(needs --witness-region).")
@click.option("--client-token", default=None, metavar="TOKEN",
              help="Override the deterministic idempotency token (to create a deliberately new, identical cluster).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the cluster is ACTIVE.")
@timeout_option(900.0)
@_interval_option
@dry_run_option
@output_option
@pass_env
def create(env: CliEnv, tags: tuple[str, ...], deletion_protection: bool, kms_key: str | None,
           policy_file: str | None, witness_region: str | None, peers: tuple[str, ...], peer_region: str | None,
           client_token: str | None, wait_: bool, timeout: float, interval: float, dry_run: bool) -> None:
    """Create a cluster (idempotent: a re-run returns the same cluster).

    The clientToken is derived from the request (region, protection, KMS key, tags, multi-Region
    settings, policy), so re-running the same command never makes a second cluster. --wait
    returns once the cluster is ACTIVE, or IDLE/INACTIVE (it exists; connecting wakes it).

    \b
    Example:
      dsqlops cluster create --tag env=dev --tag team=payments --wait
      dsqlops cluster create --no-deletion-protection --policy-file policy.json --dry-run
      dsqlops cluster create --witness-region us-west-2 --peer arn:aws:dsql:us-east-2:111122223333:cluster/abc…
      dsqlops --region us-east-1 cluster create --peer-region us-east-2 --witness-region us-west-2 --wait

    --peer-region creates both clusters of a multi-Region pair and peers them, as one resumable
    plan (--dry-run prints every API call in order).
    """
    from dsqlops.control import clusters as cc
    from dsqlops.output import to_jsonable

    if peer_region is not None:
        for flag, given in (("--peer", bool(peers)), ("--kms-key", kms_key is not None),
                            ("--policy-file", policy_file is not None)):
            if given:
                raise UsageError(f"{flag} cannot be combined with --peer-region",
                                 hint="--peer names an existing peer; KMS keys and policies are per Region: set "
                                 "them on each cluster afterwards with `cluster update` / `cluster policy put`")
        _create_pair(env, _region(env), peer_region, witness_region, deletion_protection, _parse_tags(tags),
                     client_token, wait_, timeout, interval, dry_run)
        return
    policy = cc.read_policy_file(policy_file) if policy_file else None
    region = _region(env)
    req = cc.CreateRequest.build(region=region, deletion_protection=deletion_protection, kms_key=kms_key,
                                 tags=_parse_tags(tags), witness_region=witness_region, peers=peers,
                                 policy=policy, client_token=client_token)
    params = cc.create_params(req)
    if dry_run:
        _print_plan({"operation": "CreateCluster", "region": region, "params": params})
        return
    client = env.aws().dsql(region)
    c = cc.create_cluster(client, req)
    if wait_ and c.status != "ACTIVE":
        _info(f"cluster {c.id} is {c.status}; waiting for ACTIVE "
              f"(resume with `dsqlops cluster wait {cc.hint_name(c.id, c.region)} --accept-idle`)")
        # accept_idle: a re-run that finds its cluster scaled down (IDLE/INACTIVE) is done; the
        # cluster exists and connecting wakes it. Waiting for ACTIVE would only run into the timeout.
        # the wait's last poll already read the cluster as it now is
        c = _wait(env, client, c.id, c.region, "active", timeout, interval, accept_idle=True).cluster \
            or cc.get_cluster(client, c.id, c.region)
    out = to_jsonable(c)
    out.pop("error", None)
    out["client_token"] = params["clientToken"]
    env.render(out)


def _create_pair(env: CliEnv, region: str, peer_region: str, witness_region: str | None, deletion_protection: bool,
                 tags: dict[str, str], client_token: str | None, wait_: bool, timeout: float, interval: float,
                 dry_run: bool) -> None:
    from dsqlops.control import clusters as cc
    from dsqlops.control import multiregion as mr
    from dsqlops.output import to_jsonable

    req = mr.PairRequest.build(region=region, peer_region=peer_region, witness_region=witness_region,
                               deletion_protection=deletion_protection, tags=tags, client_token=client_token)
    if dry_run:
        _print_plan({"plan": mr.pair_plan(req, wait=wait_)})
        return
    aws = env.aws()
    res = mr.create_pair(aws.dsql, req, on_step=_info)
    if wait_:
        hosts = " and ".join(f"`dsqlops cluster wait {cc.hint_name(c.id, c.region)} --accept-idle`"
                             for c in res.clusters)
        _info(f"waiting for both clusters (resume with {hosts}, or re-run this command)")
        for i, c in enumerate(res.clusters):
            client = aws.dsql(c.region)
            res.clusters[i] = _wait(env, client, c.id, c.region, "active", timeout, interval,
                                    accept_idle=True).cluster or cc.get_cluster(client, c.id, c.region)
    rows = []
    for c, token in zip(res.clusters, res.client_tokens, strict=True):
        d = to_jsonable(c)
        d.pop("error", None)
        d["client_token"] = token
        rows.append(d)
    env.render(rows, columns=["region", "id", "status", "endpoint", "witness_region", "peers"]
               if env.output_format in ("table", "csv") else None)


@cluster.command("list")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUS_CHOICES, case_sensitive=False),
              help="Only clusters in this status (repeatable).")
@click.option("--workers", type=click.IntRange(1, 32), default=8, show_default=True,
              help="Concurrent GetCluster calls (per Region).")
@click.option("--all-regions", is_flag=True,
              help="Every Region where DSQL exists (the price table's Regions), listed in parallel.")
@click.option("--region-workers", type=click.IntRange(1, 16), default=4, show_default=True,
              help="With --all-regions: Regions listed at once.")
@output_option
@pass_env
def list_(env: CliEnv, statuses: tuple[str, ...], workers: int, all_regions: bool, region_workers: int) -> None:
    """List clusters with status, endpoint and tags.

    Columns: id, status, endpoint, deletion protection, creation time, tags.

    ListClusters returns only ids, so each cluster is described with bounded concurrency;
    throttling is retried by botocore. A cluster that still cannot be described is listed as
    UNKNOWN and the command exits 254 after printing the rest.

    --all-regions lists every Region of the price table in one table (with a region column);
    a Region that fails (not enabled, access denied, unreachable) is named with its error on
    stderr (and under failed_regions in JSON/YAML), the others still answer, and the command
    exits 254.

    \b
    Example:
      dsqlops cluster list
      dsqlops -o json cluster list --status ACTIVE --status IDLE
      dsqlops cluster list --all-regions
    """
    from dsqlops.control.clusters import list_clusters
    from dsqlops.errors import Incomplete
    from dsqlops.output import warn

    if all_regions:
        _list_all_regions(env, statuses, workers, region_workers)
        return
    region = _region(env)
    rows = list_clusters(env.aws().dsql(region), region, status=statuses or None, workers=workers)
    data = _rows(rows)
    fmt = env.output_format
    env.render(data, columns=LIST_COLUMNS if fmt in ("table", "csv") else None,
               empty_message=f"no clusters in {region}")
    failed = [c for c in rows if c.error]
    for c in failed:
        warn(f"could not describe cluster {c.id}: {c.error}")
    if failed:
        raise Incomplete(f"{len(failed)} of {len(rows)} clusters could not be described",
                         hint="re-run later; throttling usually passes")


def _rows(clusters: list[Any]) -> list[dict[str, Any]]:
    from dsqlops.output import to_jsonable

    data = []
    for c in clusters:
        d = to_jsonable(c)
        if d.get("error") is None:
            d.pop("error", None)
        data.append(d)
    return data


def _list_all_regions(env: CliEnv, statuses: tuple[str, ...], workers: int, region_workers: int) -> None:
    from dsqlops.control.clusters import list_fleet
    from dsqlops.cost.pricing import dsql_regions, load_for
    from dsqlops.errors import Incomplete
    from dsqlops.output import to_jsonable, warn

    regions = dsql_regions(load_for(None, env.settings))
    aws = env.aws()
    clients = {r: aws.dsql(r) for r in regions}  # built here, in one thread (boto3 client creation is not)
    fleet = list_fleet(clients, status=statuses or None, workers=workers, region_workers=region_workers)
    fleet.clusters.sort(key=lambda c: c.region)  # stable: each Region keeps its creation-time order
    fmt = env.output_format
    if fmt in ("table", "csv"):
        env.render(_rows(fleet.clusters), columns=["region", *LIST_COLUMNS],
                   empty_message=f"no clusters in {len(regions) - len(fleet.failed_regions)} regions")
    else:
        env.render({"regions": fleet.regions, "clusters": _rows(fleet.clusters),
                    "failed_regions": [to_jsonable(f) for f in fleet.failed_regions]})
    undescribed = [c for c in fleet.clusters if c.error]
    for c in undescribed:
        warn(f"could not describe cluster {c.id} in {c.region}: {c.error}")
    for f in fleet.failed_regions:
        warn(f"region {f.region}: could not list clusters: {f.error}")
    if fleet.failed_regions or undescribed:
        parts = []
        if fleet.failed_regions:
            parts.append(f"{len(fleet.failed_regions)} of {len(regions)} regions could not be listed "
                         f"({', '.join(f.region for f in fleet.failed_regions)})")
        if undescribed:
            parts.append(f"{len(undescribed)} clusters could not be described")
        raise Incomplete("; ".join(parts),
                         hint="the rest is printed above; a region not enabled for the account answers "
                         "with an invalid-token error")


@cluster.command("show")
@click.argument("cluster_ref", metavar="CLUSTER")
@output_option
@pass_env
def show(env: CliEnv, cluster_ref: str) -> None:
    """Everything about one cluster in one view.

    GetCluster, tags, resource policy, VPC endpoint service name and CDC streams.

    \b
    Example:
      dsqlops cluster show abcdefghijklmnopqrstuvwxyz
      dsqlops -o json cluster show abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws
    """
    from dsqlops.control.clusters import show_cluster
    from dsqlops.output import warn

    ref, region, client = _target(env, cluster_ref)
    detail = show_cluster(client, ref.id, region)
    for part in detail.unavailable:
        warn(f"partial view: {part}")
    env.render(detail)


@cluster.command("update")
@click.argument("cluster_ref", metavar="CLUSTER")
@click.option("--deletion-protection/--no-deletion-protection", default=None,
              help="Turn deletion protection on or off.")
@click.option("--kms-key", default=None, metavar="KEY",
              help="New KMS key id/ARN/alias; AWS_OWNED_KMS_KEY reverts to an AWS-owned key.")
@click.option("--witness-region", default=None, metavar="REGION", help="Multi-Region: the witness Region.")
@click.option("--peer", "peers", multiple=True, metavar="ARN",
              help="Multi-Region: the full list of peer ARNs (repeatable; replaces the current list).")
@click.option("--no-peers", is_flag=True, help="Multi-Region: remove every peer.")
@dry_run_option
@output_option
@pass_env
def update(env: CliEnv, cluster_ref: str, deletion_protection: bool | None, kms_key: str | None,
           witness_region: str | None, peers: tuple[str, ...], no_peers: bool, dry_run: bool) -> None:
    """Change protection, KMS key or multi-Region peers.

    Also the witness Region; AWS_OWNED_KMS_KEY reverts to an AWS-owned key.

    \b
    Example:
      dsqlops cluster update abcdefghijklmnopqrstuvwxyz --no-deletion-protection
      dsqlops cluster update abcdefghijklmnopqrstuvwxyz --kms-key AWS_OWNED_KMS_KEY --dry-run
    """
    from dsqlops.control import clusters as cc
    from dsqlops.output import to_jsonable

    if peers and no_peers:
        raise UsageError("--peer and --no-peers are mutually exclusive")
    ref, region, client = _target(env, cluster_ref)
    req = cc.UpdateRequest(cluster_id=ref.id, deletion_protection=deletion_protection, kms_key=kms_key,
                           witness_region=witness_region,
                           peers=() if no_peers else (tuple(peers) if peers else None))
    if dry_run:
        params = cc.update_params(req, region=region)  # validates; multi-Region parts not named are filled at run time
        plan: dict[str, Any] = {"operation": "UpdateCluster", "region": region, "params": params}
        if req.witness_region is not None or req.peers is not None:
            plan["note"] = ("multiRegionProperties is a full replacement: a part not given "
                            "(witness or peers) is copied from GetCluster at run time")
        _print_plan(plan)
        return
    c = cc.update_cluster(client, req, region)
    out = to_jsonable(c)
    out.pop("error", None)
    env.render(out)


@cluster.command("delete")
@click.argument("cluster_ref", metavar="CLUSTER")
@click.option("--disable-deletion-protection", is_flag=True,
              help="If the cluster is protected, turn protection off first (said on stderr).")
@click.option("--with-peers", is_flag=True,
              help="Multi-Region: delete the cluster and every peer (checked first, each in its Region).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the cluster is gone.")
@timeout_option(900.0)
@_interval_option
@yes_option
@dry_run_option
@output_option
@pass_env
def delete(env: CliEnv, cluster_ref: str, disable_deletion_protection: bool, with_peers: bool, wait_: bool,
           timeout: float, interval: float, yes: bool, dry_run: bool) -> None:
    """Delete a cluster (asks unless --yes; refuses a protected one).

    A cluster with deletion protection is refused unless --disable-deletion-protection is given
    explicitly; then dsqlops turns protection off first and says so.

    \b
    Example:
      dsqlops cluster delete abcdefghijklmnopqrstuvwxyz --yes --wait
      dsqlops cluster delete abcdefghijklmnopqrstuvwxyz --disable-deletion-protection --dry-run
    """
    from dsqlops.control import clusters as cc

    ref, region, client = _target(env, cluster_ref)
    if with_peers:
        _delete_set(env, ref.id, region, disable_deletion_protection, wait_, timeout, interval, yes, dry_run)
        return
    if dry_run:
        _print_plan({"region": region,
                     "calls": cc.delete_plan(ref.id, disable_protection=disable_deletion_protection)})
        return
    env.confirm(f"Delete cluster {ref.id} in {region}? Its data will be lost", yes=yes)
    res = cc.delete_cluster(client, ref.id, region, disable_protection=disable_deletion_protection,
                            on_step=lambda m: _info(m))
    if res.peers:
        others = ", ".join(res.peers)
        _info(f"cluster {ref.id} is peered with {others}: it stays PENDING_DELETE until every peer is deleted "
              f"too; delete them with `dsqlops cluster delete ARN`, or next time use --with-peers")
    if wait_:
        _info(f"cluster {ref.id} is {res.status}; waiting until it is gone "
              f"(resume with `dsqlops cluster wait {cc.hint_name(ref.id, region)} --for deleted`)")
        w = _wait(env, client, ref.id, region, "deleted", timeout, interval, existed=True)
        res.status = w.status
    env.render(res)


def _delete_set(env: CliEnv, cluster_id: str, region: str, disable_protection: bool, wait_: bool, timeout: float,
                interval: float, yes: bool, dry_run: bool) -> None:
    from dsqlops.control import clusters as cc
    from dsqlops.control import multiregion as mr

    aws = env.aws()
    members = mr.describe_set(aws.dsql, cluster_id, region)
    if dry_run:
        _print_plan({"plan": mr.delete_set_plan(members, disable_protection=disable_protection)})
        return
    names = ", ".join(cc.hint_name(m.id, m.region) for m in members)
    env.confirm(f"Delete {len(members)} cluster(s): {names}? Their data will be lost", yes=yes)
    results = mr.delete_set(aws.dsql, members, disable_protection=disable_protection, on_step=_info)
    if wait_:
        hosts = " ".join(cc.hint_name(m.id, m.region) for m in members)
        _info(f"waiting until all are gone (resume with `dsqlops cluster wait HOST --for deleted` for each of {hosts})")
        for m, res in zip(members, results, strict=True):
            w = _wait(env, aws.dsql(m.region), m.id, m.region, "deleted", timeout, interval, existed=True)
            res.status = w.status
    rows = [{"region": m.region, "id": r.id, "status": r.status, "protection_disabled": r.protection_disabled}
            for m, r in zip(members, results, strict=True)]
    env.render(rows)


@cluster.command("wait")
@click.argument("cluster_ref", metavar="CLUSTER")
@click.option("--for", "target", type=click.Choice(["active", "deleted"]), default="active", show_default=True,
              help="What to wait for.")
@click.option("--accept-idle", is_flag=True,
              help="Count IDLE/INACTIVE (exists, scaled down) as available for --for active.")
@timeout_option(600.0)
@_interval_option
@output_option
@pass_env
def wait(env: CliEnv, cluster_ref: str, target: str, accept_idle: bool, timeout: float, interval: float) -> None:
    """Wait for a cluster to become ACTIVE or to be deleted (bounded).

    FAILED exits 1 at once; a timeout exits 4 and can be resumed by re-running. IDLE/INACTIVE
    mean the cluster exists but scaled down: with --accept-idle they count as available,
    otherwise the wait continues (connecting wakes the cluster). PENDING_SETUP means a
    multi-Region cluster is waiting for its peer.

    \b
    Example:
      dsqlops cluster wait abcdefghijklmnopqrstuvwxyz --for active --timeout 300
      dsqlops cluster wait abcdefghijklmnopqrstuvwxyz --for deleted
    """
    from dsqlops.validate import parse_cluster

    region_named = parse_cluster(cluster_ref).region is not None
    ref, region, client = _target(env, cluster_ref)
    res = _wait(env, client, ref.id, region, target, timeout, interval, accept_idle, region_named=region_named)
    env.render({"id": res.id, "target": res.target, "status": res.status,
                "elapsed_seconds": round(res.elapsed_seconds, 3), "polls": res.polls, "note": res.note})


@cluster.command("tag")
@click.argument("cluster_ref", metavar="CLUSTER")
@click.argument("tags", nargs=-1, required=True, metavar="KEY=VALUE...")
@output_option
@pass_env
def tag(env: CliEnv, cluster_ref: str, tags: tuple[str, ...]) -> None:
    """Add or overwrite tags on a cluster; prints the resulting tags.

    \b
    Example:
      dsqlops cluster tag abcdefghijklmnopqrstuvwxyz env=prod team=payments
    """
    from dsqlops.control import clusters as cc

    tag_map = _parse_tags(tags)
    ref, region, client = _target(env, cluster_ref)
    arn = cc.cluster_arn(client, ref.id, region, ref.arn)
    env.render(cc.tag_cluster(client, arn, tag_map))


@cluster.command("untag")
@click.argument("cluster_ref", metavar="CLUSTER")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@output_option
@pass_env
def untag(env: CliEnv, cluster_ref: str, keys: tuple[str, ...]) -> None:
    """Remove tags (by key) from a cluster; prints the remaining tags.

    \b
    Example:
      dsqlops cluster untag abcdefghijklmnopqrstuvwxyz team
    """
    from dsqlops.control import clusters as cc
    from dsqlops.validate import validate_tag_key

    for k in keys:
        validate_tag_key(k)
    ref, region, client = _target(env, cluster_ref)
    arn = cc.cluster_arn(client, ref.id, region, ref.arn)
    env.render(cc.untag_cluster(client, arn, keys))


# --------------------------------------------------------------------------- policy


@cluster.group("policy")
def policy() -> None:
    """Get, put or delete the resource policy.

    put and delete take --expected-version (optimistic concurrency).

    \b
    Example:
      dsqlops cluster policy get abcdefghijklmnopqrstuvwxyz
      dsqlops cluster policy put abcdefghijklmnopqrstuvwxyz policy.json --expected-version 3
    """


@policy.command("get")
@click.argument("cluster_ref", metavar="CLUSTER")
@output_option
@pass_env
def policy_get(env: CliEnv, cluster_ref: str) -> None:
    """Print the resource policy and its version.

    Exits 254 when the cluster has no policy.

    \b
    Example:
      dsqlops -o json cluster policy get abcdefghijklmnopqrstuvwxyz
    """
    from dsqlops.control.clusters import get_policy
    from dsqlops.errors import NotFoundError

    ref, _, client = _target(env, cluster_ref)
    try:
        pol = get_policy(client, ref.id)
    except NotFoundError as e:
        raise NotFoundError(f"cluster {ref.id} has no resource policy (or does not exist)", code=e.code,
                            request_id=e.request_id) from None
    env.render(pol)


@policy.command("put")
@click.argument("cluster_ref", metavar="CLUSTER")
@click.argument("policy_file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--expected-version", default=None, metavar="VERSION",
              help="Only replace the policy if it is still at this version.")
@click.option("--bypass-lockout-check", is_flag=True,
              help="Skip the policy lockout safety check (dangerous: can lock you out).")
@dry_run_option
@output_option
@pass_env
def policy_put(env: CliEnv, cluster_ref: str, policy_file: str, expected_version: str | None,
               bypass_lockout_check: bool, dry_run: bool) -> None:
    """Set the resource policy from a JSON file ("-" reads stdin).

    \b
    Example:
      dsqlops cluster policy put abcdefghijklmnopqrstuvwxyz policy.json --expected-version 1a2b…
    """
    from dsqlops.control import clusters as cc

    if policy_file == "-":
        text = cc.normalize_policy(sys.stdin.read(), source="policy on stdin")
    else:
        text = cc.read_policy_file(policy_file)
    ref, region, client = _target(env, cluster_ref)
    if dry_run:
        _print_plan({"operation": "PutClusterPolicy", "region": region,
                     "params": cc.policy_put_params(ref.id, text, expected_version, bypass_lockout_check)})
        return
    env.render(cc.put_policy(client, ref.id, text, expected_version=expected_version,
                             bypass_lockout_check=bypass_lockout_check))


@policy.command("delete")
@click.argument("cluster_ref", metavar="CLUSTER")
@click.option("--expected-version", default=None, metavar="VERSION",
              help="Only delete the policy if it is still at this version.")
@yes_option
@output_option
@pass_env
def policy_delete(env: CliEnv, cluster_ref: str, expected_version: str | None, yes: bool) -> None:
    """Delete the resource policy (asks unless --yes).

    \b
    Example:
      dsqlops cluster policy delete abcdefghijklmnopqrstuvwxyz --expected-version 1a2b… --yes
    """
    from dsqlops.control.clusters import delete_policy

    ref, _, client = _target(env, cluster_ref)
    env.confirm(f"Delete the resource policy of cluster {ref.id}?", yes=yes)
    env.render(delete_policy(client, ref.id, expected_version=expected_version))


# --------------------------------------------------------------------------- streams


@cluster.group("streams")
def streams() -> None:
    """List and show a cluster's CDC streams.

    \b
    Example:
      dsqlops cluster streams list abcdefghijklmnopqrstuvwxyz
    """


@streams.command("list")
@click.argument("cluster_ref", metavar="CLUSTER")
@output_option
@pass_env
def streams_list(env: CliEnv, cluster_ref: str) -> None:
    """List the CDC streams of a cluster.

    \b
    Example:
      dsqlops -o json cluster streams list abcdefghijklmnopqrstuvwxyz
    """
    from dsqlops.control.clusters import list_streams

    ref, _, client = _target(env, cluster_ref)
    env.render(list_streams(client, ref.id), empty_message=f"cluster {ref.id} has no streams")


@streams.command("show")
@click.argument("cluster_ref", metavar="CLUSTER")
@click.argument("stream_id", metavar="STREAM_ID")
@output_option
@pass_env
def streams_show(env: CliEnv, cluster_ref: str, stream_id: str) -> None:
    """Show one CDC stream: status, target, failure reason.

    \b
    Example:
      dsqlops cluster streams show abcdefghijklmnopqrstuvwxyz bcdefghijklmnopqrstuvwxyza
    """
    from dsqlops.control.clusters import get_stream, validate_stream_id

    validate_stream_id(stream_id)
    ref, _, client = _target(env, cluster_ref)
    env.render(get_stream(client, ref.id, stream_id))
