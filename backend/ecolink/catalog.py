"""The catalog: regions, GPU types, per-GPU hourly rates, GPU counts and GPU budgets.

Loaded from a TOML file (the packaged `catalog.toml` unless `ecolink serve --catalog`
names another). Rates are kept as integer micro-dollars per GPU-hour.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ecocore.money import MoneyError, format_usd, usd_to_micros


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class GpuType:
    name: str
    rate_per_gpu_hour: int  # micro-dollars
    gpu_counts: tuple[int, ...]
    node_labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Region:
    name: str
    gpu_budget: int
    gpu_types: tuple[GpuType, ...]
    node_labels: tuple[tuple[str, str], ...] = ()

    def gpu_type(self, name: str) -> GpuType | None:
        for t in self.gpu_types:
            if t.name == name:
                return t
        return None


@dataclass(frozen=True)
class Catalog:
    regions: tuple[Region, ...]
    _by_name: dict[str, Region] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({r.name: r for r in self.regions})

    def region(self, name: str) -> Region | None:
        return self._by_name.get(name)

    def node_selector(self, region: str, gpu_type: str) -> tuple[tuple[str, str], ...]:
        """Node labels a kubernetes pod of this region and GPU type must match."""
        r = self.region(region)
        if r is None:
            return ()
        labels = dict(r.node_labels)
        t = r.gpu_type(gpu_type)
        if t is not None:
            labels.update(dict(t.node_labels))
        return tuple(sorted(labels.items()))

    def as_json(self) -> dict[str, Any]:
        return {
            "regions": [
                {
                    "name": r.name,
                    "gpu_budget": r.gpu_budget,
                    "gpu_types": [
                        {
                            "name": t.name,
                            "rate_per_gpu_hour": format_usd(t.rate_per_gpu_hour),
                            "gpu_counts": list(t.gpu_counts),
                        }
                        for t in r.gpu_types
                    ],
                }
                for r in self.regions
            ]
        }


def _labels(raw: object, where: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise CatalogError(f"{where}: node_labels must be a table of strings")
    return tuple(sorted(raw.items()))


def parse_catalog(data: dict[str, Any]) -> Catalog:
    regions_raw = data.get("regions")
    if not isinstance(regions_raw, list) or not regions_raw:
        raise CatalogError("the catalog needs at least one [[regions]] entry")
    regions: list[Region] = []
    seen: set[str] = set()
    for i, r in enumerate(regions_raw):
        where = f"regions[{i}]"
        if not isinstance(r, dict):
            raise CatalogError(f"{where}: not a table")
        name = r.get("name")
        if not isinstance(name, str) or not name or name in seen:
            raise CatalogError(f"{where}: missing or duplicate name")
        seen.add(name)
        budget = r.get("gpu_budget")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
            raise CatalogError(f"{where}: gpu_budget must be a non-negative integer")
        types: list[GpuType] = []
        tseen: set[str] = set()
        for j, t in enumerate(r.get("gpu_types") or []):
            twhere = f"{where}.gpu_types[{j}]"
            if not isinstance(t, dict):
                raise CatalogError(f"{twhere}: not a table")
            tname = t.get("name")
            if not isinstance(tname, str) or not tname or tname in tseen:
                raise CatalogError(f"{twhere}: missing or duplicate name")
            tseen.add(tname)
            try:
                rate = usd_to_micros(t.get("rate_per_gpu_hour"))
            except MoneyError as exc:
                raise CatalogError(f"{twhere}: rate_per_gpu_hour: {exc}") from exc
            if rate <= 0:
                raise CatalogError(f"{twhere}: rate_per_gpu_hour must be positive")
            counts = t.get("gpu_counts", [1, 2, 4, 8])
            if (
                not isinstance(counts, list)
                or not counts
                or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts)
            ):
                raise CatalogError(f"{twhere}: gpu_counts must be positive integers")
            types.append(
                GpuType(
                    name=tname,
                    rate_per_gpu_hour=rate,
                    gpu_counts=tuple(sorted(set(counts))),
                    node_labels=_labels(t.get("node_labels"), twhere),
                )
            )
        if not types:
            raise CatalogError(f"{where}: no gpu_types")
        regions.append(
            Region(
                name=name,
                gpu_budget=budget,
                gpu_types=tuple(types),
                node_labels=_labels(r.get("node_labels"), where),
            )
        )
    return Catalog(regions=tuple(regions))


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Load the catalog from `path`, or the packaged default when None."""
    try:
        if path is None:
            text = resources.files("ecolink").joinpath("catalog.toml").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot read the catalog: {exc}") from exc
    return parse_catalog(data)
