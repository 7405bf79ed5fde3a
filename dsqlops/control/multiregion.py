"""Multi-Region clusters as one plan: create a peered pair, delete a peered set.

**Create** (``cluster create --peer-region R2 --witness-region W``), in the order the DSQL user
guide gives ("Configuring multi-Region clusters"; docs/control.md, "Multi-Region in one plan"):

1. CreateCluster in R1 with ``{witnessRegion: W}`` — it waits in PENDING_SETUP for its peer;
2. CreateCluster in R2 with ``{witnessRegion: W, clusters: [ARN1]}``;
3. UpdateCluster of cluster 1 with ``{witnessRegion: W, clusters: [ARN2]}`` — unless GetCluster
   already shows it peered (a re-run after the last step).

Both creates carry the deterministic clientToken of :func:`dsqlops.control.clusters.client_token_for`
(cluster 2's request names ARN1, so its token depends on cluster 1), so a re-run after a failure at
any step finds the clusters the first run made and goes on where it stopped; nothing is created twice.

**Delete** (``cluster delete X --with-peers``): GetCluster of X and of every peer (each in its own
Region) first; if any member is protected and protection may not be turned off, nothing is touched.
Then protection is turned off where needed and each member is deleted, X first: a deleted peer waits
in PENDING_DELETE until the last one is deleted, which moves the set to DELETING. Members already
PENDING_DELETE/DELETING/gone are skipped, so a re-run resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dsqlops.control.clusters import (
    Cluster,
    CreateRequest,
    DeleteResult,
    create_cluster,
    create_params,
    delete_cluster,
    get_cluster,
    hint_name,
)
from dsqlops.errors import NotFoundError, UsageError
from dsqlops.validate import CLUSTER_ARN_RE, validate_region

log = logging.getLogger(__name__)

ClientFor = Callable[[str], Any]
#: Statuses in which a member of a set needs no DeleteCluster any more.
DELETE_DONE = frozenset({"PENDING_DELETE", "DELETING", "DELETED"})


@dataclass(frozen=True)
class PairRequest:
    """Two peered clusters, in ``region`` and ``peer_region``, with ``witness_region``."""

    region: str
    peer_region: str
    witness_region: str
    deletion_protection: bool = True
    tags: tuple[tuple[str, str], ...] = ()
    client_token: str | None = None

    @classmethod
    def build(cls, *, region: str, peer_region: str, witness_region: str | None, deletion_protection: bool = True,
              tags: dict[str, str] | None = None, client_token: str | None = None) -> PairRequest:
        validate_region(region)
        validate_region(peer_region)
        if witness_region is None:
            raise UsageError("--peer-region needs --witness-region (a third Region that keeps the quorum)")
        validate_region(witness_region)
        if peer_region == region:
            raise UsageError(f"--peer-region {peer_region} is the cluster's own Region; the peer must be in "
                             "another Region")
        if witness_region in (region, peer_region):
            raise UsageError(f"the witness Region {witness_region} must differ from both cluster Regions "
                             f"({region}, {peer_region})")
        if client_token is not None and len(client_token) > 126:
            raise UsageError("--client-token with --peer-region must be at most 126 characters (-1/-2 is added)")
        first = cls(region, peer_region, witness_region, deletion_protection,
                    tuple(sorted((tags or {}).items())), client_token)
        first.first()  # validates tags and the token as CreateRequest does
        return first

    def _token(self, n: int) -> str | None:
        return f"{self.client_token}-{n}" if self.client_token else None

    def first(self) -> CreateRequest:
        return CreateRequest.build(region=self.region, deletion_protection=self.deletion_protection,
                                   tags=dict(self.tags), witness_region=self.witness_region,
                                   client_token=self._token(1))

    def second(self, first_arn: str) -> CreateRequest:
        return CreateRequest.build(region=self.peer_region, deletion_protection=self.deletion_protection,
                                   tags=dict(self.tags), witness_region=self.witness_region, peers=[first_arn],
                                   client_token=self._token(2))


def _step(n: int, region: str, operation: str, params: dict[str, Any], when: str | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"step": n, "region": region, "operation": operation, "params": params}
    if when:
        step["when"] = when
    return step


def pair_plan(req: PairRequest, *, wait: bool = False) -> list[dict[str, Any]]:
    """Every API call of :func:`create_pair`, in order (``--dry-run``). Values known only at run
    time are written as ``<…>``."""
    arn1, arn2 = "<ARN of cluster 1>", "<ARN of cluster 2>"
    p2 = create_params(req.second("arn:aws:dsql:" + req.region + ":000000000000:cluster/" + "a" * 26))
    p2["clientToken"] = ("<derived from the request, which names cluster 1's ARN>" if req.client_token is None
                         else p2["clientToken"])
    p2["multiRegionProperties"] = {"witnessRegion": req.witness_region, "clusters": [arn1]}
    plan = [
        _step(1, req.region, "CreateCluster", create_params(req.first())),
        _step(2, req.peer_region, "CreateCluster", p2),
        _step(3, req.region, "GetCluster", {"identifier": "<id of cluster 1>"}),
        _step(4, req.region, "UpdateCluster",
              {"identifier": "<id of cluster 1>",
               "multiRegionProperties": {"witnessRegion": req.witness_region, "clusters": [arn2]}},
              when="cluster 1 does not list cluster 2 as a peer yet"),
    ]
    if wait:
        plan.append(_step(5, req.region, "GetCluster", {"identifier": "<id of cluster 1>"},
                          when="polled until ACTIVE (or IDLE/INACTIVE)"))
        plan.append(_step(6, req.peer_region, "GetCluster", {"identifier": "<id of cluster 2>"},
                          when="polled until ACTIVE (or IDLE/INACTIVE)"))
    return plan


@dataclass
class PairResult:
    clusters: list[Cluster]
    client_tokens: list[str]
    #: What this run did (steps skipped because an earlier run did them are named too).
    steps: list[str] = field(default_factory=list)


def create_pair(client_for: ClientFor, req: PairRequest,
                on_step: Callable[[str], None] | None = None) -> PairResult:
    """Run :func:`pair_plan` (without the waits). Resumable: see the module doc."""
    steps: list[str] = []

    def say(msg: str) -> None:
        steps.append(msg)
        log.debug("%s", msg)
        if on_step:
            on_step(msg)

    r1 = req.first()
    c1_client = client_for(req.region)
    c1 = create_cluster(c1_client, r1)
    say(f"cluster 1 {hint_name(c1.id, c1.region)}: {c1.status}")
    if not c1.arn:  # pragma: no cover - CreateCluster always returns it
        raise NotFoundError(f"CreateCluster in {req.region} returned no ARN")
    r2 = req.second(c1.arn)
    c2 = create_cluster(client_for(req.peer_region), r2)
    say(f"cluster 2 {hint_name(c2.id, c2.region)}: {c2.status}, peered with cluster 1")
    current = get_cluster(c1_client, c1.id, req.region)
    if c2.arn in current.peers:
        say("cluster 1 already lists cluster 2 as its peer")
    else:
        from dsqlops.aws import aws_errors

        peers = sorted({*current.other_peers, c2.arn or ""} - {""})
        with aws_errors(f"UpdateCluster {c1.id}"):
            c1_client.update_cluster(identifier=c1.id, multiRegionProperties={
                "witnessRegion": req.witness_region, "clusters": peers})
        say(f"cluster 1 peered with cluster 2 ({c2.arn})")
    clusters = [get_cluster(c1_client, c1.id, req.region), c2]
    if not clusters[1].peers:
        clusters[1] = get_cluster(client_for(req.peer_region), c2.id, req.peer_region)
    return PairResult(clusters=clusters, client_tokens=[create_params(r1)["clientToken"],
                                                         create_params(r2)["clientToken"]], steps=steps)


# --------------------------------------------------------------------------- delete a set


def _peer_refs(arns: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for arn in arns:
        m = CLUSTER_ARN_RE.fullmatch(arn)
        if m:
            out.append((m["id"], m["region"]))
    return out


@dataclass
class SetMember:
    id: str
    region: str
    status: str
    deletion_protection: bool | None


def describe_set(client_for: ClientFor, cluster_id: str, region: str) -> list[SetMember]:
    """The cluster and its peers (each read in its own Region); a peer already gone is left out."""
    first = get_cluster(client_for(region), cluster_id, region)
    members = [SetMember(first.id, first.region, first.status, first.deletion_protection)]
    for pid, pregion in _peer_refs(first.other_peers):
        try:
            p = get_cluster(client_for(pregion), pid, pregion)
        except NotFoundError:
            continue
        members.append(SetMember(p.id, p.region, p.status, p.deletion_protection))
    return members


def delete_set_plan(members: list[SetMember], *, disable_protection: bool) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    n = 0
    for m in members:
        n += 1
        calls.append(_step(n, m.region, "GetCluster", {"identifier": m.id}))
    for m in members:
        if m.status in DELETE_DONE:
            continue
        if m.deletion_protection and disable_protection:
            n += 1
            calls.append(_step(n, m.region, "UpdateCluster", {"identifier": m.id, "deletionProtectionEnabled": False}))
        n += 1
        calls.append(_step(n, m.region, "DeleteCluster", {"identifier": m.id}))
    return calls


def delete_set(client_for: ClientFor, members: list[SetMember], *, disable_protection: bool = False,
               on_step: Callable[[str], None] | None = None) -> list[DeleteResult]:
    """Delete every member of ``members`` (from :func:`describe_set`), after checking them all."""
    protected = [m for m in members if m.deletion_protection and m.status not in DELETE_DONE]
    if protected and not disable_protection:
        names = ", ".join(hint_name(m.id, m.region) for m in protected)
        raise UsageError(f"deletion protection is on for {names}; nothing was deleted",
                         hint="re-run with --disable-deletion-protection to turn it off on each member first")
    out: list[DeleteResult] = []
    for m in members:
        if m.status in DELETE_DONE:
            if on_step:
                on_step(f"cluster {hint_name(m.id, m.region)} is already {m.status}")
            out.append(DeleteResult(id=m.id, status=m.status))
            continue
        out.append(delete_cluster(client_for(m.region), m.id, m.region, disable_protection=disable_protection,
                                  on_step=on_step))
        if on_step:
            on_step(f"DeleteCluster {hint_name(m.id, m.region)}: {out[-1].status}")
    return out
