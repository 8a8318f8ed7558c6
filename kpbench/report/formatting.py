"""Numbers and names as the report shows them (plain text; escaping is the renderers' job), and
footnote numbering. Metric labels, directions and fixed decimals come from :mod:`kpbench.metricinfo`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kpbench.metricinfo import metric_direction, metric_info, metric_label
from kpbench.protocol import protocol_info
from kpbench.results import BASELINE_PREFIX, is_baseline

ARROWS: dict[str, str] = {"higher": "↑", "lower": "↓"}
VERDICT_MARKS: dict[str, str] = {"holds": "✓", "fails": "✗", "equivalent": "=", "underpowered": "?",
                                 "missing": "–"}


def ordered(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    """Distinct values: those in ``preferred`` first in its order, the rest alphabetically."""
    rank = {value: index for index, value in enumerate(preferred)}
    return sorted(dict.fromkeys(values), key=lambda value: (rank.get(value, len(rank)), value))


def metric_heading(metric: str) -> str:
    """``"FID ↓"``: the label with the direction in which the metric improves."""
    arrow = ARROWS.get(metric_direction(metric) or "", "")
    return f"{metric_label(metric)} {arrow}".rstrip()


def protocol_heading(protocol: str) -> str:
    """A protocol's section heading: its registered :attr:`Protocol.heading`, else its name."""
    info = protocol_info(protocol)
    return info.heading if info is not None and info.heading else protocol


def variant_label(variant: str) -> str:
    """A variant as shown: trained variants as named, ``baseline:prior_mask`` as
    ``prior mask (floor)``."""
    if is_baseline(variant):
        return variant[len(BASELINE_PREFIX):].replace("_", " ") + " (floor)"
    return variant


def format_number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def column_decimals(means: Iterable[float], stds: Iterable[float]) -> int | None:
    """Decimals shared by one column: three significant digits of its largest mean, or more
    where its median spread needs them to show one significant digit (at most 6)."""
    magnitudes = [abs(mean) for mean in means if not math.isnan(mean)]
    if not magnitudes:
        return None
    top = max(magnitudes)
    decimals = 2 - math.floor(math.log10(top)) if top > 0 else 3
    spreads = [std for std in stds if not math.isnan(std) and std > 0]
    if spreads:
        decimals = max(decimals, -math.floor(math.log10(statistics.median(spreads))))
    return max(0, min(6, decimals))


def metric_decimals(metric: str, means: Iterable[float], stds: Iterable[float]) -> int | None:
    """Decimals of one column of ``metric``: the metric's registered ones when it fixes them
    (:attr:`kpbench.metricinfo.MetricInfo.decimals`), else :func:`column_decimals`."""
    means = list(means)
    info = metric_info(metric)
    if info is not None and info.decimals is not None and any(not math.isnan(mean) for mean in means):
        return info.decimals
    return column_decimals(means, stds)


def format_mean_std(mean: float, std: float, decimals: int | None = None) -> str:
    """``"0.734 ± 0.012"`` with ``decimals`` (see :func:`column_decimals`); without them the
    spread gets two significant digits and the mean the same decimal place. The mean alone
    when there is no spread (one seed)."""
    mean_text, std_text = split_mean_std(mean, std, decimals)
    return f"{mean_text} ± {std_text}" if std_text else mean_text


def format_interval(low: float, high: float, decimals: int | None = None) -> str:
    """``"[0.580, 0.610]"`` with ``decimals`` (else :func:`format_number`); "" without one."""
    if math.isnan(low) or math.isnan(high):
        return ""
    if decimals is None:
        return f"[{format_number(low)}, {format_number(high)}]"
    return f"[{low:.{decimals}f}, {high:.{decimals}f}]"


def split_mean_std(mean: float, std: float, decimals: int | None = None) -> tuple[str, str]:
    """(mean, spread) as text; the spread is "" for one seed."""
    if math.isnan(mean):
        return "n/a", ""
    if decimals is None:
        if math.isnan(std) or std == 0:
            return format_number(mean), "" if math.isnan(std) else "0"
        decimals = max(0, min(6, 1 - math.floor(math.log10(std))))
    return f"{mean:.{decimals}f}", "" if math.isnan(std) else f"{std:.{decimals}f}"


def format_n(n_min: float, n_max: float) -> str:
    if math.isnan(n_min):
        return ""
    return f"{n_min:.0f}" if n_min == n_max else f"{n_min:.0f}–{n_max:.0f}"


def number3(value: float) -> str:
    """Three significant digits (as the claims' reasons print them); "n/a" for NaN."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    text = f"{value:#.3g}"
    return text[:-1] if text.endswith(".") else text


def evidence_numbers(item: Mapping[str, Any]) -> tuple[str, str]:
    """(mean, interval) of one evidence cell as text."""
    low, high = item.get("low", math.nan), item.get("high", math.nan)
    interval = (
        "none" if not all(isinstance(b, (int, float)) and not math.isnan(b) for b in (low, high))
        else f"[{number3(low)}, {number3(high)}]"
    )
    return number3(item.get("mean", math.nan)), interval


class Footnotes:
    """Numbers distinct notes in order of first use (shared by every cell of one table);
    ``prefix`` keeps the notes' element ids unique within a page. One instance per table, owned
    by the code that lays that table out."""

    def __init__(self, prefix: str = "note-") -> None:
        self.prefix = prefix
        self._numbers: dict[str, int] = {}
        self._explain_missing: set[str] = set()  # notes that stand in for a missing value

    def refs(self, notes: str, missing: bool = False) -> list[int]:
        numbers = []
        for note in notes.split("\n") if notes else []:
            numbers.append(self._numbers.setdefault(note, len(self._numbers) + 1))
            if missing:
                self._explain_missing.add(note)
        return numbers

    def numbered(self) -> list[tuple[int, str]]:
        return [(number, note) for note, number in self._numbers.items()]

    def items(self) -> list[dict[str, Any]]:
        """The notes for a template: ``id``, ``number``, ``text`` and ``missing`` (the note stands
        in for a missing value)."""
        return [
            {"id": f"{self.prefix}{number}", "number": number, "text": note,
             "missing": note in self._explain_missing}
            for number, note in self.numbered()
        ]

    def ref_items(self, notes: str, missing: bool = False) -> list[dict[str, Any]]:
        """References for a template: ``number`` and ``href`` of each note."""
        return [{"number": n, "href": f"#{self.prefix}{n}"} for n in self.refs(notes, missing)]

    def text_refs(self, notes: str) -> str:
        """`` [1,2]``: plain-text references (terminal and Markdown)."""
        refs = self.refs(notes)
        return " [" + ",".join(map(str, refs)) + "]" if refs else ""
