"""``dsqlops pricing …``: show the DSQL price table and refresh it from the AWS Price List API."""

from __future__ import annotations

from pathlib import Path

import click

from dsqlops.cli.common import CliEnv, output_option, pass_env
from dsqlops.cli.cost import pricing_file_option
from dsqlops.errors import UsageError


@click.group("pricing")
def pricing() -> None:
    """Show and refresh the DSQL price table.

    \b
    Example:
      dsqlops pricing show --region us-east-1
      dsqlops pricing refresh --out ~/.config/dsqlops/pricing.yaml
    """


@pricing.command("show")
@click.option("--region", "region", default=None, metavar="REGION", help="Only this region.")
@pricing_file_option
@output_option
@pass_env
def show(env: CliEnv, region: str | None, pricing_file: str | None) -> None:
    """Show the price table in use (per region, with source and confidence).

    \b
    Example:
      dsqlops pricing show
      dsqlops pricing show --region ap-northeast-1 -o json
    """
    from dsqlops.cost import pricing as P
    from dsqlops.output import info
    from dsqlops.validate import validate_region

    if region:
        validate_region(region)
    path, source = P.resolve_path(pricing_file, env.settings)
    table = P.load(path)
    env.render(table.rows(region))
    info(f"price table: {path} ({source}), as_of {table.as_of}; third_party=true entries are not from AWS")


@pricing.command("refresh")
@click.option("--out", "out", default=None, metavar="FILE",
              help="Where to write the new table [default: the config's pricing_file].")
@click.option("--region", "regions", multiple=True, metavar="REGION",
              help="Only refresh these regions (repeatable) [default: every region the API prices].")
@click.option("--api-region", type=click.Choice(["us-east-1", "eu-central-1", "ap-south-1"]), default=None,
              help="Price List API endpoint region [default: us-east-1].")
@click.option("--dry-run", is_flag=True, help="Show the diff; write nothing.")
@pricing_file_option
@output_option
@pass_env
def refresh(env: CliEnv, out: str | None, regions: tuple[str, ...], api_region: str | None, dry_run: bool,
            pricing_file: str | None) -> None:
    """Rebuild the price table from the AWS Price List API and show the diff.

    Reads GetProducts for ServiceCode AuroraDSQL, writes a new table with today's as_of atomically
    to --out (or the configured pricing_file). Never overwrites the table shipped with dsqlops.

    \b
    Example:
      dsqlops pricing refresh --out ~/.config/dsqlops/pricing.yaml
      dsqlops pricing refresh --out prices.yaml --region us-east-1 --dry-run
    """
    from dsqlops.cost import pricing as P
    from dsqlops.output import info
    from dsqlops.validate import validate_region

    for r in regions:
        validate_region(r)
    target = out or (env.settings.section("pricing_file") if not pricing_file else pricing_file)
    if not target:
        raise UsageError("no destination for the refreshed table",
                         hint="pass --out FILE or set pricing_file in the config (the shipped table is read-only)")
    base_path, _src = P.resolve_path(pricing_file, env.settings)
    if not base_path.exists():
        base_path = P.shipped_path()
    old = P.load(base_path)
    client = env.aws().pricing(api_region or "us-east-1")
    new, changes = P.refresh(client, old, Path(str(target)), regions=list(regions) or None, write=not dry_run)
    env.render(changes, empty_message="no price changes")
    info(("would write" if dry_run else "wrote") + f" {new.path} (as_of {new.as_of}, {len(new.regions)} regions)")
