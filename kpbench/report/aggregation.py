"""Result rows -> statistics per cell and the tables' layout: pure pandas, no files, no markup.

A run's rows are first averaged per seed (value, ci_low and ci_high; a protocol writes one row
per cell, so this only matters for duplicates), then each cell gets the mean, the sample standard
deviation (ddof=1) over the seeds that have a value, and a 95 % interval from
:func:`kpbench.stats.cell_interval`. See :func:`best_flags` for when a variant is marked best.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kpbench.claims import ClaimResult, check_claims
from kpbench.identity import box_source_of, distinguishing_tags
from kpbench.identity import label as run_label
from kpbench.metricinfo import metric_bounds, metric_direction, metric_label, ordered_metrics
from kpbench.protocol import protocol_info
from kpbench.report.formatting import (
    format_interval,
    format_mean_std,
    format_n,
    metric_decimals,
)
from kpbench.results import is_baseline, sample_matrices
from kpbench.runs import list_runs
from kpbench.stats import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_weights,
    cell_interval,
    hierarchical_estimate,
    one_blas_thread,
    separated,
    stable_rng,
)

# Display order of baselines; others follow alphabetically, baselines (``baseline:*``) always last.
# Protocols and metrics are ordered by their registries (Protocol.order, MetricInfo.order).
BASELINE_ORDER: tuple[str, ...] = ("baseline:prior_mask", "baseline:nearest_neighbour")

CELL_KEYS: list[str] = ["protocol", "condition", "extractor", "metric", "variant"]
STAT_COLUMNS: tuple[str, ...] = (
    "mean", "std", "low", "high", "seeds", "valued", "n_min", "n_max", "notes",
)
COLUMN_KEYS: list[str] = ["protocol", "condition", "extractor", "metric"]


@dataclass(frozen=True)
class Headline:
    """One summary column: a metric of a protocol under one condition and feature extractor."""

    protocol: str
    condition: str
    metric: str
    extractor: str = ""

    @property
    def key(self) -> str:
        return "/".join((self.protocol, self.condition, self.metric, self.extractor))

    @property
    def label(self) -> str:
        return metric_label(self.metric)

    @property
    def context(self) -> str:
        extractor = "" if self.extractor == self.condition else self.extractor
        return " · ".join(part for part in (self.protocol, self.condition, extractor) if part)


def label_runs(rows: pd.DataFrame, runs_root: Path,
               names: Collection[str] | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows whose ``variant`` is the run's label (kpbench.identity): its variant and the identity
    settings that not every run in the report shares, so ``full`` and ``full-random`` (trained
    on random patches) are compared side by side and seeds of one label are aggregated.
    Baseline rows keep only data settings (``baseline:prior_mask-n5``). Also returns run folder
    name -> label. Folders without a config.json (hand-made rows) keep their variant. ``names``:
    label among these runs only (the others keep their variant)."""
    infos = {info.name: info for info in list_runs(runs_root, problems=[])  # the report names bad files
             if names is None or info.name in names}
    tags = distinguishing_tags({name: info.tags for name, info in infos.items()},
                               untrained={name for name, info in infos.items() if info.predictions})
    rows = rows.copy()

    def relabel(variant: str, run: str) -> str:
        return run_label(variant, tags[run], data_only=is_baseline(variant)) if run in tags else variant

    rows["variant"] = [relabel(v, r) for v, r in zip(rows["variant"], rows["run"])]
    return rows, {name: relabel(info.variant, name) for name, info in infos.items()}


def aggregate(rows: pd.DataFrame, samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (protocol, condition, extractor, metric, variant) with ``mean``, ``std``
    (sample std over seeds, NaN for one seed), ``low``/``high`` (the 95 % interval, NaN when none
    can be formed: the hierarchical bootstrap over seeds then images of
    :func:`kpbench.stats.hierarchical_estimate` where ``samples``, the per-sample values
    (:func:`kpbench.results.read_samples`, labelled like ``rows``), hold the cell; else
    :func:`kpbench.stats.cell_interval` of the per-seed values), ``seeds`` (seeds with a
    row), ``valued`` (seeds with a value, behind ``mean``), ``n_min``, ``n_max`` (samples per
    seed), ``notes`` (distinct notes, newline-joined) and ``best``."""
    rows = rows.copy()
    for column in ("ci_low", "ci_high"):  # hand-built frames may lack the interval columns
        rows[column] = pd.to_numeric(rows[column], errors="coerce") if column in rows else math.nan
    # Duplicates of one seed are averaged first (value and bounds alike).
    per_seed = (
        rows.groupby([*CELL_KEYS, "seed"], sort=False)
        .agg(value=("value", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"),
             n=("n", "max"))
        .reset_index()
    )
    matrices = {key: matrix.values for key, matrix in sample_matrices(samples, CELL_KEYS).items()}
    with one_blas_thread():
        records = _cell_records(per_seed, matrices)
    stats = pd.DataFrame.from_records(
        records, columns=[*CELL_KEYS, "mean", "std", "low", "high", "seeds", "valued", "n_min", "n_max"]
    )
    notes = rows.groupby(CELL_KEYS, sort=False)["note"].agg(join_notes).rename("notes")
    stats = stats.join(notes, on=CELL_KEYS)
    stats["best"] = best_flags(stats)
    return stats


def _cell_records(per_seed: pd.DataFrame,
                  matrices: dict[tuple[Any, ...], np.ndarray]) -> list[dict[str, Any]]:
    """One record per cell of ``per_seed`` (one row per seed), its interval from ``matrices``
    (per-sample values by cell key) where they hold the cell."""
    records = []
    for key, group in per_seed.groupby(CELL_KEYS, sort=False):
        cell = cell_interval(group["value"].to_numpy(), group["ci_low"].to_numpy(),
                             group["ci_high"].to_numpy(), bounds=metric_bounds(key[3]))
        if key in matrices:
            estimate = hierarchical_estimate(matrices[key], stable_rng("table"),
                                             weights=shared_weights)
            cell = replace(cell, low=estimate.low, high=estimate.high)
        records.append({
            **dict(zip(CELL_KEYS, key)),
            "mean": group["value"].mean(),
            "std": group["value"].std(),
            "low": cell.low,
            "high": cell.high,
            "seeds": len(group),
            "valued": int(group["value"].count()),
            "n_min": group["n"].min(),
            "n_max": group["n"].max(),
        })
    return records


@lru_cache(maxsize=64)
def shared_weights(size: int) -> np.ndarray:
    """One bootstrap draw (R, size) per size, shared by a table's cells (seeded by the size)."""
    return bootstrap_weights(stable_rng("table weights", size), size, BOOTSTRAP_RESAMPLES)


def join_notes(notes: pd.Series) -> str:
    return "\n".join(dict.fromkeys(note for note in notes if note))


def best_flags(stats: pd.DataFrame) -> pd.Series:
    """True where a trained variant has the best mean of its column and an interval separated
    (:func:`kpbench.stats.separated`) from every other trained variant's with a value there. No
    mark where the metric has no direction, fewer than two trained variants have a value, or
    the leader's interval overlaps (or a rival has no interval). Baselines take no part."""
    best = pd.Series(False, index=stats.index)
    for (_, _, _, metric), group in stats.groupby(COLUMN_KEYS, sort=False):
        direction = metric_direction(metric)
        trained = group[~group["variant"].map(is_baseline) & group["mean"].notna()]
        if direction is None or len(trained) < 2:
            continue
        leader = trained["mean"].idxmax() if direction == "higher" else trained["mean"].idxmin()
        low, high = trained.at[leader, "low"], trained.at[leader, "high"]
        rivals = trained.drop(index=leader)
        distinct = (rivals["mean"] != trained.at[leader, "mean"]).all()
        apart = all(separated(low, high, lo, hi) for lo, hi in zip(rivals["low"], rivals["high"]))
        best.loc[leader] = bool(distinct and apart)
    return best


def variant_order(variants: Iterable[str]) -> list[str]:
    """Distinct variants (run labels) in display order: trained ones by their variant's
    registration order (``kpbench list``; full first), each variant's default-settings run before
    its other labels, unknown names last; then baselines (:data:`BASELINE_ORDER`, then the rest)."""
    from kpbench.variant import list_variants

    registered = [spec.name for spec in list_variants()]
    names = list(dict.fromkeys(variants))
    trained = [v for v in names if not is_baseline(v)]
    baselines = [v for v in names if is_baseline(v)]
    return (sorted(trained, key=lambda label: label_rank(label, registered))
            + sorted(baselines, key=lambda label: label_rank(label, BASELINE_ORDER)))


def label_rank(label: str, order: Sequence[str]) -> tuple[int, str, str]:
    """Sort key of a run label among names in ``order``: the longest name the label is or starts
    with (``full-random`` -> ``full``, ``baseline:prior_mask-n2`` -> ``baseline:prior_mask``)
    gives its place, the plain name before its labelled runs; unknown labels last."""
    for name in sorted(order, key=len, reverse=True):
        if label == name or label.startswith(name + "-"):
            return order.index(name), name, label[len(name):]
    return len(order), label, ""


def ordered_protocols(protocols: Iterable[str]) -> list[str]:
    """Distinct protocol names in report order: registered ones by :attr:`Protocol.order`,
    the rest alphabetically after them."""

    def key(name: str) -> tuple[float, str]:
        protocol = protocol_info(name)
        return (protocol.order if protocol else math.inf), name

    return sorted(dict.fromkeys(protocols), key=key)


def unregistered_notice(rows: pd.DataFrame) -> str | None:
    """One line naming the protocols and metrics of ``rows`` that are not registered (their
    sections and columns then show raw names, with no heading, label or direction), and how to
    load the file that registers them; None when every one is registered."""
    from kpbench.metricinfo import metric_info
    from kpbench.plugins import PLUGINS_ENV

    protocols = sorted(name for name in set(rows["protocol"].astype(str)) if protocol_info(name) is None)
    metrics = sorted(name for name in set(rows["metric"].astype(str)) if metric_info(name) is None)
    if not protocols and not metrics:
        return None
    parts = [f"{kind}{'s' if len(names) > 1 else ''} {', '.join(names)}"
             for kind, names in (("protocol", protocols), ("metric", metrics)) if names]
    return (f"rows of {' and '.join(parts)} are reported without their registration (raw names; no "
            f"heading, label or direction): load the file that registers them with `kpbench --plugin FILE "
            f"report` or {PLUGINS_ENV}=FILE")


def default_headlines(rows: pd.DataFrame) -> list[Headline]:
    """Summary columns: for each protocol whose :attr:`Protocol.summary` is set (every protocol
    when none of those has rows), its :attr:`Protocol.summary_metrics` (by default every metric
    except within-run spreads, ``*_std``) under its headline condition:
    :attr:`Protocol.headline_condition`, else the first condition its rows list."""
    protocols = ordered_protocols(rows["protocol"])
    infos = {name: protocol_info(name) for name in protocols}
    chosen = [name for name in protocols if (info := infos[name]) is not None and info.summary] or protocols
    headlines = []
    for protocol in chosen:
        info = infos[protocol]
        of_protocol = rows[rows["protocol"] == protocol]
        conditions: list[str] = [str(value) for value in dict.fromkeys(of_protocol["condition"])]
        preferred = info.headline_condition if info else None
        condition = preferred if preferred is not None and preferred in conditions else conditions[0]
        of_condition = of_protocol[of_protocol["condition"] == condition]
        for extractor in dict.fromkeys(of_condition["extractor"]):
            metrics = of_condition.loc[of_condition["extractor"] == extractor, "metric"]
            for metric in ordered_metrics(metrics):
                wanted = info.summary_metrics if info and info.summary_metrics is not None else None
                if (metric in wanted) if wanted is not None else not metric.endswith("_std"):
                    headlines.append(Headline(protocol, condition, metric, extractor))
    return headlines


def summary_table(
    rows: pd.DataFrame,
    headlines: Sequence[Headline] | None = None,
    *,
    stats: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Variants x headline metrics, long form: one row per (column, variant) in display order,
    with ``column`` (:attr:`Headline.key`), ``label``, ``context``, ``direction``, the
    :func:`aggregate` statistics, ``text`` (mean ± std as shown in the report) and
    ``interval`` (``"[low, high]"``, "" when there is none). Baselines come last."""
    stats = aggregate(rows) if stats is None else stats
    indexed = stats.set_index(CELL_KEYS).sort_index()
    records = []
    for headline in default_headlines(rows) if headlines is None else headlines:
        for variant in variant_order(rows["variant"]):
            key = (headline.protocol, headline.condition, headline.extractor, headline.metric, variant)
            if key not in indexed.index:
                continue
            cell = indexed.loc[key]
            records.append({
                "column": headline.key,
                "label": headline.label,
                "context": headline.context,
                "direction": metric_direction(headline.metric) or "",
                **dict(zip(CELL_KEYS, key)),
                **{name: cell[name] for name in STAT_COLUMNS},
                "best": bool(cell["best"]),
            })
    summary = pd.DataFrame.from_records(records)
    if not summary.empty:
        decimals = {
            column: metric_decimals(group["metric"].iloc[0], group["mean"], group["std"])
            for column, group in summary.groupby("column", sort=False)
        }
        summary["text"] = [
            format_mean_std(mean, std, decimals[column])
            for column, mean, std in zip(summary["column"], summary["mean"], summary["std"])
        ]
        summary["interval"] = [
            format_interval(low, high, decimals[column])
            for column, low, high in zip(summary["column"], summary["low"], summary["high"])
        ]
    return summary


def shared_notes(cells: pd.DataFrame) -> str:
    """Notes carried by every value of a column (two or more): said once, in its heading."""
    valued = [notes.split("\n") for notes in cells.loc[cells["mean"].notna(), "notes"]]
    if len(valued) < 2:
        return ""
    return "\n".join(note for note in valued[0] if note and all(note in other for other in valued[1:]))


def own_notes(cell: Any, shared: str) -> str:
    """A cell's notes less those its column's heading gives; a missing value keeps them all."""
    if not shared or math.isnan(cell["mean"]):
        return str(cell["notes"])
    dropped = set(shared.split("\n"))
    return "\n".join(note for note in cell["notes"].split("\n") if note not in dropped)


@dataclass(frozen=True)
class SummaryColumn:
    key: str
    metric: str
    context_lines: list[str]  # protocol · condition, extractor, n
    n_uniform: bool  # every variant evaluated on the same n (else each cell says its n)
    decimals: int | None
    shared_notes: str  # notes on every value of the column, referenced from its heading


def summary_grid(summary: pd.DataFrame) -> tuple[list[SummaryColumn], list[tuple[str, list[Any]]]]:
    """The long summary as columns and, per variant, one cell (a row of ``summary``) or None per
    column."""
    columns = []
    for key, cells in summary.groupby("column", sort=False):
        first = cells.iloc[0]
        n_min, n_max = cells["n_min"].min(), cells["n_max"].max()
        lines = [
            " · ".join(part for part in (first["protocol"], first["condition"]) if part),
            "" if first["extractor"] == first["condition"] else first["extractor"],
            f"n={format_n(n_min, n_max)}",
        ]
        columns.append(SummaryColumn(
            key=str(key),
            metric=first["metric"],
            context_lines=[line for line in lines if line],
            n_uniform=n_min == n_max,
            decimals=metric_decimals(first["metric"], cells["mean"], cells["std"]),
            shared_notes=shared_notes(cells),
        ))
    cells_by_key = {(row["column"], row["variant"]): row for _, row in summary.iterrows()}
    rows = [
        (variant, [cells_by_key.get((column.key, variant)) for column in columns])
        for variant in variant_order(summary["variant"])  # baselines last, whichever columns they have
    ]
    return columns, rows


def extractor_tables(stats: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """A protocol's cells as tables: one per feature extractor where a condition was measured
    with several (numbers from different extractors are not comparable), else one table
    (e.g. classification, where the features are the condition). Each table comes with its
    extractor, or "" when it has none or several."""
    extractors = list(dict.fromkeys(stats["extractor"]))
    pairs = stats[["condition", "extractor"]].drop_duplicates()
    if len(extractors) > 1 and pairs["condition"].duplicated().any():
        return [(extractor, stats[stats["extractor"] == extractor]) for extractor in extractors]
    return [(extractors[0] if len(extractors) == 1 else "", stats)]


_PAIR = re.compile(r"([A-Za-z_]\w*)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])")


@dataclass(frozen=True)
class Axis:
    """A numeric parameter parsed from conditions such as ``"sigma=0.1"`` or ``"N=3, mode=one"``:
    ``x`` maps a condition to its value, ``series`` to the rest of the condition (one line each)."""

    key: str
    x: dict[str, float]
    series: dict[str, str]

    def sort(self, conditions: list[str]) -> list[str]:
        """Conditions on the axis grouped by series and sorted by value; others keep their place
        in front."""
        series_order = list(dict.fromkeys(self.series[c] for c in conditions if c in self.x))
        on_axis = sorted(
            (c for c in conditions if c in self.x),
            key=lambda c: (series_order.index(self.series[c]), self.x[c]),
        )
        return [c for c in conditions if c not in self.x] + on_axis


def numeric_axis(conditions: Sequence[str]) -> Axis | None:
    """The first ``key=number`` parameter that takes at least two values across ``conditions``."""
    parsed = {c: {m.group(1): float(m.group(2)) for m in _PAIR.finditer(c)} for c in conditions}
    keys = dict.fromkeys(key for pairs in parsed.values() for key in pairs)
    for key in keys:
        x = {c: pairs[key] for c, pairs in parsed.items() if key in pairs}
        if len(set(x.values())) >= 2:
            pattern = re.compile(rf"(?<!\w){re.escape(key)}\s*=\s*[^\s,;/|]+")
            series = {c: pattern.sub("", c).strip(" ,;/|:") for c in x}
            return Axis(key, x, series)
    return None


@dataclass(frozen=True)
class ProtocolGrid:
    """One protocol table: metric columns with their decimals and heading notes, and per
    condition (in ``conditions`` order) each variant's statistics indexed by metric."""

    metrics: list[str]
    decimals: dict[str, int | None]
    shared_notes: dict[str, str]
    groups: list[tuple[str, list[tuple[str, pd.DataFrame]]]]


def protocol_grid(stats: pd.DataFrame, variants: Sequence[str], axis: Axis | None) -> ProtocolGrid:
    """``stats`` of one table laid out by condition (in axis order when there is one) and variant
    (in ``variants`` order)."""
    by_metric = dict(list(stats.groupby("metric")))
    metrics = ordered_metrics(stats["metric"])
    decimals = {m: metric_decimals(m, by_metric[m]["mean"], by_metric[m]["std"]) for m in metrics}
    conditions = list(dict.fromkeys(stats["condition"]))
    if axis is not None:
        conditions = axis.sort(conditions)
    indexed = stats.set_index(["condition", "variant", "metric"]).sort_index()
    present = set(zip(stats["condition"], stats["variant"]))
    groups = [
        (condition, [
            (variant, indexed.loc[(condition, variant)])
            for variant in variants if (condition, variant) in present
        ])
        for condition in conditions
    ]
    return ProtocolGrid(metrics, decimals, {m: shared_notes(by_metric[m]) for m in metrics}, groups)


def judge_claims_by_box_source(rows: pd.DataFrame, runs_root: Path,
                               samples: pd.DataFrame | None = None,
                               ) -> dict[str, tuple[list[ClaimResult], str]]:
    """:func:`judge_claims` once per box source the runs were trained on
    (:func:`kpbench.identity.box_source_of`): each source's runs alone, labelled among
    themselves, so ``full`` is the full model on that source; empty when every run shares one
    source. ``rows`` as :func:`label_runs`
    takes them (with ``run``). Rows of an evaluation on another source (conditions
    ``...@<source>``) are in no claim's cells. ``samples``: the per-sample values
    (:func:`kpbench.results.read_samples`, unlabelled), for paired differences."""
    groups: dict[str, list[str]] = {}
    for info in list_runs(runs_root, problems=[]):
        groups.setdefault(box_source_of(info.tags), []).append(info.name)
    if len(groups) < 2:  # one source: the report's own claims table is that judgement
        return {}
    judged = {}
    for source, names in sorted(groups.items()):
        labelled, _ = label_runs(rows[rows["run"].isin(names)], runs_root, names)
        source_samples = None
        if samples is not None and not samples.empty:
            source_samples, _ = label_runs(samples[samples["run"].isin(names)], runs_root, names)
        judged[source] = judge_claims(labelled, source_samples)
    return judged


@dataclass(frozen=True)
class BoxSourceVerdicts:
    """The claim check per box source, for a report: ``sources`` in column order and, per claim
    (in the first source's order), source -> (verdict, difference with its interval)."""

    sources: list[str]
    claims: dict[str, dict[str, tuple[str, str]]]
    errors: dict[str, str]  # source -> why its claims could not be checked

    def change(self, claim: str) -> str:
        """How the claim's verdict compares across sources: ``changes`` when two sources decided
        it differently (holds / fails / equivalent), ``decided on some sources only`` when one
        decided it and another could not (underpowered: fewer seeds or more variance there, not
        an opposite result), else "". A source without the claim's rows ("missing") judged
        nothing."""
        verdicts = {verdict for verdict, _ in self.claims[claim].values() if verdict != "missing"}
        decided = verdicts & DECIDED_VERDICTS
        if len(decided) > 1:
            return "changes"
        return "decided on some sources only" if decided and verdicts - decided else ""


DECIDED_VERDICTS = frozenset({"holds", "fails", "equivalent"})


def box_source_verdicts(judged: dict[str, tuple[list[ClaimResult], str]]) -> BoxSourceVerdicts:
    """:func:`judge_claims_by_box_source`'s result arranged claim by source."""
    claims: dict[str, dict[str, tuple[str, str]]] = {}
    for source, (results, _) in judged.items():
        for result in results:
            claims.setdefault(result.claim, {})[source] = (str(result.verdict), result.difference)
    return BoxSourceVerdicts(list(judged), claims, {source: error for source, (_, error) in judged.items()
                                                     if error})


def verdict_changes(judged: dict[str, tuple[list[ClaimResult], str]]) -> dict[str, dict[str, str]]:
    """Claim -> box source -> verdict, for the claims two sources decided differently
    (:meth:`BoxSourceVerdicts.change`; "missing" judged nothing)."""
    verdicts = box_source_verdicts(judged)
    return {claim: {source: verdict for source, (verdict, _) in by_source.items() if verdict != "missing"}
            for claim, by_source in verdicts.claims.items() if verdicts.change(claim) == "changes"}


def judge_claims(rows: pd.DataFrame, samples: pd.DataFrame | None = None) -> tuple[list[ClaimResult], str]:
    """:func:`kpbench.claims.check_claims` of ``rows`` (and their per-sample values), or
    ([], why) when the rows cannot be judged (e.g. one cell measured under several extractors)."""
    try:
        return check_claims(rows, samples), ""
    except ValueError as error:
        return [], str(error)
