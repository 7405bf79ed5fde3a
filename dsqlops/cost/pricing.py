"""The DSQL price table: load and validate ``pricing/dsql.yaml``, refresh it from the Price List API.

The shipped table lives at the repository root (``pricing/dsql.yaml``) and is installed as
``dsqlops/pricing/dsql.yaml`` (``dsqlops/pricing`` is a symlink to ``../pricing`` in the source
tree; the wheel contains a real copy). ``--pricing-file`` or the ``pricing_file`` config key point
at another table. ``pricing refresh`` never overwrites the shipped table.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsqlops.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from mypy_boto3_pricing import PricingClient

SHIPPED_NAME = "dsql.yaml"
STORAGE_UNITS = ("GB", "GiB")
CONFIDENCE = ("high", "medium", "low")
REQUIRED = ("dpu_usd_per_million", "storage_usd_per_gb_month", "storage_unit", "free_tier_dpu",
            "free_tier_storage_gb_month", "currency", "as_of", "source", "confidence")
#: The Price List API service code and usage-type markers (docs/dsql-facts.md §5.4).
SERVICE_CODE = "AuroraDSQL"
DPU_USAGETYPE = "DistributedProcessingUnits"
STORAGE_USAGETYPE = "Storage"


@dataclass(frozen=True)
class RegionPrice:
    region: str
    dpu_usd_per_million: Decimal
    storage_usd_per_gb_month: Decimal
    storage_unit: str
    free_tier_dpu: Decimal
    free_tier_storage_gb_month: Decimal
    currency: str
    as_of: dt.date
    source: str
    confidence: str
    third_party: bool = False

    @property
    def bytes_per_unit(self) -> Decimal:
        """Bytes in one storage unit: 1e9 for GB, 2^30 for GiB."""
        return Decimal(10**9) if self.storage_unit == "GB" else Decimal(2**30)

    def to_yaml(self) -> dict[str, Any]:
        return {"dpu_usd_per_million": str(self.dpu_usd_per_million),
                "storage_usd_per_gb_month": str(self.storage_usd_per_gb_month),
                "storage_unit": self.storage_unit, "free_tier_dpu": str(self.free_tier_dpu),
                "free_tier_storage_gb_month": str(self.free_tier_storage_gb_month),
                "currency": self.currency, "as_of": self.as_of.isoformat(), "source": self.source,
                "confidence": self.confidence, "third_party": self.third_party}


@dataclass(frozen=True)
class PriceTable:
    path: str
    regions: Mapping[str, RegionPrice]
    as_of: dt.date
    currency: str = "USD"
    header: str = field(default="", repr=False, compare=False)

    def get(self, region: str) -> RegionPrice:
        try:
            return self.regions[region]
        except KeyError:
            raise ConfigError(
                f"price table {self.path} has no prices for region {region!r}",
                hint="add the region to the table (see docs/cost.md), run 'dsqlops pricing refresh --out FILE' "
                "and pass --pricing-file FILE") from None

    def rows(self, region: str | None = None) -> list[dict[str, Any]]:
        regions = [self.get(region)] if region else [self.regions[r] for r in sorted(self.regions)]
        return [{"region": p.region, **_row(p)} for p in regions]

    def dump(self) -> str:
        import yaml

        body = {"schema": 1, "currency": self.currency, "as_of": self.as_of.isoformat(),
                "regions": {r: self.regions[r].to_yaml() for r in sorted(self.regions)}}
        return (self.header or "") + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def _row(p: RegionPrice) -> dict[str, Any]:
    return {"dpu_usd_per_million": p.dpu_usd_per_million, "storage_usd_per_gb_month": p.storage_usd_per_gb_month,
            "storage_unit": p.storage_unit, "free_tier_dpu": p.free_tier_dpu,
            "free_tier_storage_gb_month": p.free_tier_storage_gb_month, "currency": p.currency,
            "as_of": p.as_of, "confidence": p.confidence, "third_party": p.third_party, "source": p.source}


def shipped_path() -> Path:
    """The table shipped with dsqlops (inside the installed package, or the source tree's copy)."""
    from importlib import resources

    p = Path(str(resources.files("dsqlops").joinpath("pricing", SHIPPED_NAME)))
    if p.exists():
        return p
    return Path(__file__).resolve().parents[2] / "pricing" / SHIPPED_NAME  # pragma: no cover


def resolve_path(flag: str | None = None, settings: Any = None) -> tuple[Path, str]:
    """--pricing-file > config ``pricing_file`` > the shipped table. Returns (path, source)."""
    if flag:
        return Path(flag).expanduser(), "flag --pricing-file"
    configured = settings.section("pricing_file") if settings is not None else None
    if configured:
        if not isinstance(configured, str):
            raise ConfigError("config key pricing_file must be a file path")
        return Path(configured).expanduser(), "config pricing_file"
    return shipped_path(), "shipped"


def _dec(path: str, key: str, value: Any, *, minimum: Decimal = Decimal(0)) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"price table {path}: {key} must be a decimal number, not {value!r}")
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ConfigError(f"price table {path}: {key} must be a decimal number, not {value!r}") from None
    if not d.is_finite() or d < minimum:
        raise ConfigError(f"price table {path}: {key} must be a finite number ≥ {minimum}, not {value!r}")
    return d


def _date(path: str, key: str, value: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"price table {path}: {key} must be a date (YYYY-MM-DD), not {value!r}") from None


def parse_table(data: Any, path: str, header: str = "") -> PriceTable:
    """Validate a parsed table; every error names the file and the key."""
    from dsqlops.validate import validate_region

    if not isinstance(data, dict):
        raise ConfigError(f"price table {path}: the top level must be a mapping")
    if data.get("schema", 1) != 1:
        raise ConfigError(f"price table {path}: schema must be 1, not {data.get('schema')!r}")
    regions = data.get("regions")
    if not isinstance(regions, dict) or not regions:
        raise ConfigError(f"price table {path}: regions must be a non-empty mapping of region -> prices")
    currency = str(data.get("currency", "USD"))
    as_of = _date(path, "as_of", data.get("as_of", dt.date.today().isoformat()))
    out: dict[str, RegionPrice] = {}
    for region, entry in regions.items():
        where = f"regions.{region}"
        try:
            validate_region(str(region))
        except UsageError:
            raise ConfigError(f"price table {path}: {where}: not an AWS region name") from None
        if not isinstance(entry, dict):
            raise ConfigError(f"price table {path}: {where} must be a mapping")
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ConfigError(f"price table {path}: {where}: missing key(s) {', '.join(missing)}")
        unknown = set(entry) - set(REQUIRED) - {"third_party"}
        if unknown:
            raise ConfigError(f"price table {path}: {where}: unknown key(s) {', '.join(sorted(unknown))}")
        unit = entry["storage_unit"]
        if unit not in STORAGE_UNITS:
            raise ConfigError(f"price table {path}: {where}.storage_unit must be GB or GiB, not {unit!r}")
        conf = entry["confidence"]
        if conf not in CONFIDENCE:
            raise ConfigError(f"price table {path}: {where}.confidence must be one of {', '.join(CONFIDENCE)}")
        if entry["currency"] != currency:
            raise ConfigError(f"price table {path}: {where}.currency {entry['currency']!r} differs from the "
                              f"table's {currency!r}; mixed currencies are not supported")
        tp = entry.get("third_party", False)
        if not isinstance(tp, bool):
            raise ConfigError(f"price table {path}: {where}.third_party must be true or false")
        out[str(region)] = RegionPrice(
            region=str(region),
            dpu_usd_per_million=_dec(path, f"{where}.dpu_usd_per_million", entry["dpu_usd_per_million"]),
            storage_usd_per_gb_month=_dec(path, f"{where}.storage_usd_per_gb_month",
                                          entry["storage_usd_per_gb_month"]),
            storage_unit=unit,
            free_tier_dpu=_dec(path, f"{where}.free_tier_dpu", entry["free_tier_dpu"]),
            free_tier_storage_gb_month=_dec(path, f"{where}.free_tier_storage_gb_month",
                                            entry["free_tier_storage_gb_month"]),
            currency=str(entry["currency"]), as_of=_date(path, f"{where}.as_of", entry["as_of"]),
            source=str(entry["source"]), confidence=conf, third_party=tp)
    return PriceTable(path=path, regions=out, as_of=as_of, currency=currency, header=header)


def load(path: Path | str) -> PriceTable:
    import yaml

    from dsqlops import yamlsafe

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read price table {p}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read price table {p}: not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        data = yamlsafe.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"price table {p}{where}: {getattr(e, 'problem', None) or e}") from None
    return parse_table(data, str(p), _leading_comments(text))


def _leading_comments(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            lines.append(line)
        else:
            break
    return "\n".join(lines) + ("\n" if lines else "")


def load_for(flag: str | None = None, settings: Any = None) -> PriceTable:
    path, _src = resolve_path(flag, settings)
    return load(path)


def dsql_regions(prices: PriceTable) -> list[str]:
    """The regions where DSQL exists, for the commands that cover them all (``--all-regions``): the
    price table's (``pricing refresh`` brings a new region in from the Price List API)."""
    return sorted(prices.regions)


# ---------------------------------------------------------------------------------------------
# Price List API


@dataclass
class ParsedPrices:
    dpu_per_unit: Decimal | None = None
    storage: Decimal | None = None
    storage_unit: str | None = None
    free_dpu: Decimal | None = None
    skus: list[str] = field(default_factory=list)


def parse_price_list(price_list: Iterable[str | Mapping[str, Any]]) -> dict[str, ParsedPrices]:
    """Parse GetProducts' ``PriceList`` (JSON strings) into per-region DPU and storage prices."""
    out: dict[str, ParsedPrices] = {}
    for item in price_list:
        doc = json.loads(item) if isinstance(item, str) else item
        product = doc.get("product", {})
        attrs = product.get("attributes", {})
        region = attrs.get("regionCode")
        usagetype = attrs.get("usagetype", "")
        if not region:
            continue
        kind = ("dpu" if DPU_USAGETYPE in usagetype
                else "storage" if STORAGE_USAGETYPE in usagetype else None)
        if kind is None:
            continue
        entry = out.setdefault(region, ParsedPrices())
        for term in (doc.get("terms", {}).get("OnDemand") or {}).values():
            for dim in (term.get("priceDimensions") or {}).values():
                raw = (dim.get("pricePerUnit") or {}).get("USD")
                if raw is None:
                    continue
                price = Decimal(str(raw))
                end = dim.get("endRange", "Inf")
                if price == 0:
                    if kind == "dpu" and end not in ("Inf", None, ""):
                        entry.free_dpu = Decimal(str(end))
                    continue
                if kind == "dpu":
                    entry.dpu_per_unit = price
                else:
                    entry.storage = price
                    unit = str(dim.get("unit", ""))
                    entry.storage_unit = "GiB" if "GiB" in unit else "GB"
                if product.get("sku"):
                    entry.skus.append(str(product["sku"]))
    return out


def fetch_price_list(client: PricingClient, regions: Iterable[str] | None = None) -> list[str]:
    """All GetProducts pages for ServiceCode AuroraDSQL (optionally one regionCode filter per region)."""
    from dsqlops.aws import aws_errors

    items: list[str] = []
    filter_sets: list[list[dict[str, str]]] = (
        [[{"Type": "TERM_MATCH", "Field": "regionCode", "Value": r}] for r in regions] if regions else [[]])
    for filters in filter_sets:
        token: str | None = None
        while True:
            req: dict[str, Any] = {"ServiceCode": SERVICE_CODE, "FormatVersion": "aws_v1", "MaxResults": 100}
            if filters:
                req["Filters"] = filters
            if token:
                req["NextToken"] = token
            with aws_errors("pricing GetProducts"):
                resp = client.get_products(**req)
            items.extend(resp.get("PriceList", []))
            token = resp.get("NextToken")
            if not token:
                break
    return items


def refreshed(old: PriceTable, parsed: Mapping[str, ParsedPrices], today: dt.date, *, path: str,
              skipped: list[str] | None = None) -> PriceTable:
    """A new table: regions the API priced get API values and today's ``as_of``; others are kept.

    A region is ``confidence: high`` / ``third_party: false`` only when both of its prices (DPU and
    storage) came from the API. When only one did, the other is kept from the old table and the
    entry keeps the old entry's confidence and provenance, with the source saying which price is new.
    A region the old table lacks and the API priced only in part is not written (a made-up price
    would be worse than none); its name is appended to ``skipped``.
    """
    regions = dict(old.regions)
    for region, p in parsed.items():
        if p.dpu_per_unit is None and p.storage is None:
            continue
        base = regions.get(region)
        complete = p.dpu_per_unit is not None and p.storage is not None
        if not complete and base is None:
            if skipped is not None:
                skipped.append(region)
            continue
        dpu = (p.dpu_per_unit * Decimal(1_000_000)).normalize() if p.dpu_per_unit is not None else None
        api = f"AWS Price List API GetProducts ServiceCode={SERVICE_CODE} (sku {', '.join(sorted(set(p.skus)))})"
        if dpu is not None and p.storage is not None:
            dpu_price, storage_price = dpu, p.storage
            source, confidence, third_party = api, "high", False
        else:
            assert base is not None
            dpu_price = dpu if dpu is not None else base.dpu_usd_per_million
            storage_price = p.storage if p.storage is not None else base.storage_usd_per_gb_month
            which = "DPU price" if dpu is not None else "storage price"
            source = f"{which}: {api}; the rest: {base.source}"
            confidence, third_party = base.confidence, base.third_party
        new = RegionPrice(
            region=region, dpu_usd_per_million=dpu_price, storage_usd_per_gb_month=storage_price,
            storage_unit=p.storage_unit or (base.storage_unit if base else "GB"),
            free_tier_dpu=p.free_dpu if p.free_dpu is not None else (base.free_tier_dpu if base else Decimal(100000)),
            free_tier_storage_gb_month=base.free_tier_storage_gb_month if base else Decimal(1),
            currency="USD", as_of=today, source=source, confidence=confidence, third_party=third_party)
        regions[region] = new
    return PriceTable(path=path, regions=regions, as_of=today, currency=old.currency, header=old.header)


def diff(old: PriceTable, new: PriceTable) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for region in sorted(set(old.regions) | set(new.regions)):
        a, b = old.regions.get(region), new.regions.get(region)
        if a is None or b is None:
            rows.append({"region": region, "field": "*", "old": "absent" if a is None else "present",
                         "new": "absent" if b is None else "present"})
            continue
        for f in ("dpu_usd_per_million", "storage_usd_per_gb_month", "storage_unit", "free_tier_dpu",
                  "free_tier_storage_gb_month", "confidence"):
            va, vb = getattr(a, f), getattr(b, f)
            if va != vb:
                rows.append({"region": region, "field": f, "old": va, "new": vb})
    return rows


def refresh(client: PricingClient, old: PriceTable, out_path: Path, *, regions: Iterable[str] | None = None,
            today: dt.date | None = None, write: bool = True) -> tuple[PriceTable, list[dict[str, Any]]]:
    """Fetch, build the new table, write it atomically to ``out_path`` (never the shipped table)."""
    import yaml

    from dsqlops.fsutil import atomic_write

    target = out_path.expanduser().resolve()
    if target == shipped_path().resolve() or "site-packages" in target.parts or "dist-packages" in target.parts:
        raise UsageError(f"refusing to overwrite the price table shipped with dsqlops ({target})",
                         hint="pass --out FILE (e.g. ~/.config/dsqlops/pricing.yaml) and set pricing_file")
    parsed = parse_price_list(fetch_price_list(client, list(regions) if regions else None))
    if not parsed:
        raise ConfigError(f"the Price List API returned no DSQL prices (ServiceCode {SERVICE_CODE})",
                          hint="the service code or usage types may have changed; see docs/cost.md")
    skipped: list[str] = []
    new = refreshed(old, parsed, today or dt.date.today(), path=str(target), skipped=skipped)
    if skipped:
        from dsqlops.output import warn

        warn(f"not written: the API priced only part of region(s) {', '.join(sorted(skipped))} "
             "(DPU or storage missing) and the old table has no entry to complete them")
    parse_table(yaml.safe_load(new.dump()), str(target))  # what we write must load
    if write:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, new.dump().encode("utf-8"))
    return new, diff(old, new)
