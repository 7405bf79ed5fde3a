"""``dsqlops budget alarm …``: CloudWatch alarms that watch a cluster's DSQL spend."""

from __future__ import annotations

import json
import sys
from decimal import Decimal, InvalidOperation

import click

from dsqlops.cli.common import CliEnv, dry_run_option, output_option, pass_env, yes_option
from dsqlops.cli.cost import pricing_file_option
from dsqlops.errors import UsageError


@click.group("budget")
def budget() -> None:
    """Create, list and delete CloudWatch budget alarms.

    \b
    Example:
      dsqlops budget alarm create --cluster abcdefghijklmnopqrstuvwxyz --monthly-usd 200 --dry-run
      dsqlops budget alarm list
    """


@budget.group("alarm")
def alarm() -> None:
    """Budget alarms on a cluster's monthly dollars (TotalDPU and ClusterStorageSize together).

    \b
    Example:
      dsqlops budget alarm create --cluster CLUSTER --monthly-usd 200 --sns-topic arn:aws:sns:us-east-1:123456789012:ops
    """


def _region_of(env: CliEnv, cluster: str) -> tuple[str, str]:
    from dsqlops.validate import parse_cluster

    ref = env.cluster(cluster)
    region = ref.region or env.settings.get("region")
    if not region:
        raise UsageError(f"no region for cluster {ref.id}", hint="pass --region or name it by endpoint/ARN")
    return parse_cluster(ref.id).id, region


@alarm.command("create")
@click.option("-c", "--cluster", required=True, metavar="CLUSTER", help="Cluster id, endpoint or ARN.")
@click.option("--monthly-usd", required=True, metavar="USD", help="Monthly budget in dollars.")
@click.option("--sns-topic", default=None, metavar="ARN", help="SNS topic to notify (alarm and OK actions).")
@click.option("--no-free-tier", is_flag=True,
              help="Do not subtract the free tier (e.g. when other clusters of the account use it up).")
@pricing_file_option
@dry_run_option
@output_option
@pass_env
def create(env: CliEnv, cluster: str, monthly_usd: str, sns_topic: str | None, no_free_tier: bool,
           pricing_file: str | None, dry_run: bool) -> None:
    """Create the alarm on a cluster's monthly DSQL dollars (DPU and storage together).

    One metric-math alarm: a day's TotalDPU times the days of this month plus the day's
    ClusterStorageSize, priced with the cluster's regional prices, minus the free tier, above the
    budget. --dry-run prints the PutMetricAlarm request instead.

    \b
    Example:
      dsqlops budget alarm create --cluster CLUSTER --monthly-usd 200 --dry-run
    """
    from dsqlops.cost import alarms, pricing
    from dsqlops.cost.timewin import utcnow

    try:
        usd = Decimal(monthly_usd)
    except InvalidOperation:
        raise UsageError("--monthly-usd must be a number") from None
    if not usd.is_finite():
        raise UsageError("--monthly-usd must be a finite positive number")
    if sns_topic and not (sns_topic.startswith("arn:") and ":sns:" in sns_topic):
        raise UsageError(f"--sns-topic must be an SNS topic ARN, not {sns_topic!r}")
    cid, region = _region_of(env, cluster)
    price = pricing.load_for(pricing_file, env.settings).get(region)
    reqs = alarms.alarm_requests(cid, region, usd, price, now=utcnow(), sns_topic=sns_topic,
                                 free_tier=not no_free_tier)
    if dry_run:
        from dsqlops.output import to_jsonable

        sys.stdout.write(json.dumps(to_jsonable([{"operation": "PutMetricAlarm", "region": region, "request": r}
                                                 for r in reqs]), indent=2) + "\n")
        return
    names = alarms.create(env.aws().cloudwatch(region), reqs)
    env.render([{"name": n, "region": region, "threshold": r["Threshold"],
                 "expression": r["Metrics"][-1]["Expression"]} for n, r in zip(names, reqs, strict=True)])


@alarm.command("list")
@click.option("-c", "--cluster", default=None, metavar="CLUSTER", help="Only this cluster's alarms.")
@output_option
@pass_env
def list_cmd(env: CliEnv, cluster: str | None) -> None:
    """List the budget alarms dsqlops created (name prefix dsqlops-budget-).

    \b
    Example:
      dsqlops --region us-east-1 budget alarm list
    """
    from dsqlops.cost import alarms

    if cluster:
        cid, region = _region_of(env, cluster)
    else:
        cid, region = None, env.settings.get("region")
        if not region:
            raise UsageError("no region", hint="pass --region")
    env.render(alarms.list_alarms(env.aws().cloudwatch(region), cid), empty_message="no dsqlops budget alarms")


@alarm.command("delete")
@click.option("-c", "--cluster", required=True, metavar="CLUSTER", help="Delete this cluster's budget alarms.")
@yes_option
@dry_run_option
@output_option
@pass_env
def delete(env: CliEnv, cluster: str, yes: bool, dry_run: bool) -> None:
    """Delete a cluster's dsqlops budget alarms (never alarms dsqlops did not create).

    \b
    Example:
      dsqlops budget alarm delete --cluster CLUSTER --yes
    """
    from dsqlops.cost import alarms

    cid, region = _region_of(env, cluster)
    cw = env.aws().cloudwatch(region)
    names = [a["name"] for a in alarms.list_alarms(cw, cid)]
    if not names:
        raise UsageError(f"cluster {cid} has no dsqlops budget alarms in {region}")
    if dry_run:
        env.render([{"operation": "DeleteAlarms", "region": region, "name": n} for n in names])
        return
    env.confirm(f"Delete {len(names)} budget alarm(s) of {cid} in {region}?", yes=yes)
    env.render([{"deleted": n, "region": region} for n in alarms.delete(cw, names)])
