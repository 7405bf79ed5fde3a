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
    """Budget alarms on TotalDPU (daily) and ClusterStorageSize.

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
@click.option("--storage-gb", default=None, metavar="GB",
              help="Storage alarm threshold [default: 80% of the storage the budget alone would buy].")
@pricing_file_option
@dry_run_option
@output_option
@pass_env
def create(env: CliEnv, cluster: str, monthly_usd: str, sns_topic: str | None, storage_gb: str | None,
           pricing_file: str | None, dry_run: bool) -> None:
    """Create the daily-DPU and storage alarms for a cluster's monthly budget.

    The DPU threshold is the budget / 30 days converted to DPU with the cluster's regional price.
    --dry-run prints the PutMetricAlarm requests instead.

    \b
    Example:
      dsqlops budget alarm create --cluster CLUSTER --monthly-usd 200 --dry-run
    """
    from dsqlops.cost import alarms, pricing

    try:
        usd = Decimal(monthly_usd)
        gb = Decimal(storage_gb) if storage_gb is not None else None
    except InvalidOperation:
        raise UsageError("--monthly-usd and --storage-gb must be numbers") from None
    if not usd.is_finite() or (gb is not None and (not gb.is_finite() or gb <= 0)):
        raise UsageError("--monthly-usd and --storage-gb must be finite positive numbers")
    if sns_topic and not (sns_topic.startswith("arn:") and ":sns:" in sns_topic):
        raise UsageError(f"--sns-topic must be an SNS topic ARN, not {sns_topic!r}")
    cid, region = _region_of(env, cluster)
    price = pricing.load_for(pricing_file, env.settings).get(region)
    reqs = alarms.alarm_requests(cid, region, usd, price, sns_topic=sns_topic, storage_gb=gb)
    if dry_run:
        from dsqlops.output import to_jsonable

        sys.stdout.write(json.dumps(to_jsonable([{"operation": "PutMetricAlarm", "region": region, "request": r}
                                                 for r in reqs]), indent=2) + "\n")
        return
    names = alarms.create(env.aws().cloudwatch(region), reqs)
    env.render([{"name": n, "region": region, "threshold": r["Threshold"], "metric": r["MetricName"]}
                for n, r in zip(names, reqs, strict=True)])


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
