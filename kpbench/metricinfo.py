"""The metric registry: a metric's name, label, direction, display order and number format.

A metric is registered with one :func:`register_metric` call in the file that computes it
(``protocols/fid.py`` registers FID, ``kpbench/protocol.py`` the reconstruction metrics,
``protocols/user_study.py`` the user study's). Results read the direction (a best mark needs one),
reports the label, the order of columns and the decimals. A metric that is not registered is
shown under its own name, after the registered ones (alphabetically), without a direction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from kpbench.plugins import PROTOCOLS_PACKAGE, import_package_modules

Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str  # as reports show it, e.g. "mask IoU"
    # Whether a bigger value is better; None for spreads (kid_std) and other metrics that rank
    # nothing (a smaller spread is not a better model).
    direction: Direction | None
    order: float = math.inf  # columns are sorted by order, then name
    decimals: int | None = None  # fixed decimals in reports; None: chosen per column from its values
    # The range a value can take (an IoU lies in [0, 1]); intervals are kept inside it. None: unbounded.
    bounds: tuple[float, float] | None = None


_REGISTRY: dict[str, MetricInfo] = {}


def register_metric(name: str, label: str | None = None, direction: Direction | None = None,
                    order: float = math.inf, decimals: int | None = None,
                    bounds: tuple[float, float] | None = None) -> MetricInfo:
    """Register a metric (at module level of the file that computes it) and return its info."""
    info = MetricInfo(name, label or name, direction, order, decimals, bounds)
    if direction not in (None, "higher", "lower"):
        raise ValueError(f"metric {name!r}: direction must be 'higher', 'lower' or None")
    if name in _REGISTRY and _REGISTRY[name] != info:
        raise ValueError(f"metric {name!r} registered twice with different settings")
    _REGISTRY[name] = info
    return info


def _load() -> dict[str, MetricInfo]:
    # The metrics are registered where they are computed: by the protocol files (the user study's
    # too) and kpbench.protocol, which each of them imports; importing the files registers them all.
    import_package_modules(PROTOCOLS_PACKAGE)
    return _REGISTRY


def list_metrics() -> list[MetricInfo]:
    """Every registered metric in display order."""
    return sorted(_load().values(), key=lambda info: (info.order, info.name))


def metric_info(name: str) -> MetricInfo | None:
    return _load().get(name)


def metric_direction(name: str) -> Direction | None:
    info = metric_info(name)
    return info.direction if info else None


def metric_bounds(name: str) -> tuple[float, float] | None:
    """The range a value of ``name`` can take, None when unbounded or unregistered."""
    info = metric_info(name)
    return info.bounds if info else None


def metric_label(name: str) -> str:
    info = metric_info(name)
    return info.label if info else name


def ordered_metrics(names: Iterable[str]) -> list[str]:
    """Distinct ``names`` in display order: registered ones by their order, the rest alphabetically."""
    registry = _load()

    def key(name: str) -> tuple[float, str]:
        info = registry.get(name)
        return (info.order if info else math.inf), name

    return sorted(dict.fromkeys(names), key=key)
