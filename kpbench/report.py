"""Comparison reports: every result row under ``runs/`` -> ``reports/<name>/``.

``build_report`` reads the tidy rows that protocols wrote next to each run and writes

    index.html   one self-contained page (inline CSS and SVG, images as data URIs, no scripts)
    results.csv  every tidy row, as read
    results.md   the paper's claims, the summary and one table per protocol, in Markdown

Numbers are aggregated over seeds: a run's rows are first averaged per seed (value, ci_low and
ci_high; a protocol writes one row per cell, so this only matters for duplicates), then each
cell shows the mean, the sample standard deviation (ddof=1, "±") over the seeds that have a
value, and a 95 % interval from :func:`kpbench.stats.cell_interval`: the rows' bootstrap
intervals over test images, widened to the t-interval of the seed means when there are several
seeds. A NaN value is shown as "n/a" with its row's note (why it is missing and how to fix it)
as a footnote.

A variant is marked *best* in a column only when the metric has a direction
(:data:`kpbench.results.METRIC_DIRECTION`; spreads such as ``kid_std`` are never ranked), it
has the best mean among the trained variants, and its interval is separated
(:func:`kpbench.stats.separated`) from every other trained variant's interval in that column.
Baselines (variants ``baseline:<name>``) are floors: listed after the trained variants, never
best and never competitors for it.

The page also shows the paper's claims as judged by :func:`kpbench.claims.check_claims`, and
training curves from each run's ``log.jsonl`` diagnostics (held-out mask IoU and spatial L1
against the prior and empty masks), with any mask-collapse warnings.

Everything that comes from data (variant names, conditions, notes, file names, JSON values, log
messages) is HTML-escaped where it enters the page, and Markdown-escaped where it enters
``results.md``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import platform
import re
import statistics
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kpbench.claims import ClaimResult, check_claims
from kpbench.errors import KpbenchError
from kpbench.identity import distinguishing_tags
from kpbench.identity import label as run_label
from kpbench.io import atomic_write_text
from kpbench.paths import WorkDir
from kpbench.results import BASELINE_PREFIX, RESULTS_DIRNAME, is_baseline, metric_direction, read_rows
from kpbench.runs import list_runs
from kpbench.stats import cell_interval, separated

DEFAULT_DESCRIPTIONS: dict[str, str] = {
    "user_study": "The user study (kpbench study make / analyze): participants chose the more "
    "realistic of two images made from the same patches, blind to the models. Preference: the "
    "share of judgments a model won against another, with a Wilson interval (the note gives the "
    "two-sided binomial p-value against 0.5); realism: the share it won against the real image; "
    "bt_score: its Bradley-Terry log strength over all pairs with a participant-bootstrap "
    "interval; patch_recognition: how often participants told correctly whether an image "
    "contains given patches; agreement: participants' pairwise agreement per question (chance "
    "0.5). The Wilson intervals and binomial tests count every judgment as independent; when "
    "few participants judge the same pairs they are too narrow, so read them next to the "
    "participant-bootstrap Bradley-Terry intervals. A second study of the same runs replaces "
    "the first one's rows (the note names the study).",
    "patches": "The same trained model fed its key patches (EdgeBoxes) versus random patches of "
    "the same count and size distribution. A model that relies on meaningful parts loses "
    "quality with random ones.",
    "noise": "Gaussian noise of increasing sigma added to the input patches (all of them, or "
    "one only). Read them against the swapped-input floor: a curve that starts at the floor "
    "belongs to a model that ignores its input, not to a robust one.",
    "classification": "The part encoder as a feature extractor from patches alone: a linear "
    "classifier under stratified k-fold cross-validation, compared with a randomly initialised "
    "encoder of the same architecture and with raw patch pixels.",
    "fid": "FID and KID of generated images against held-out real images. FID is biased for "
    "N < 2048 samples (its covariance is not full rank); KID is unbiased.",
    "num_patches": "N = 1..5 input patches at test time. The summed part encoder accepts any N; "
    "a model with a fixed input layout cannot.",
    "combination": "Patches taken from two or three different images and combined into one "
    "input: can the model compose parts it never saw together?",
}

# Display order; names not listed follow alphabetically, baselines (``baseline:*``) always last.
BASELINE_ORDER: tuple[str, ...] = ("baseline:prior_mask", "baseline:nearest_neighbour")
PROTOCOL_ORDER: tuple[str, ...] = (
    "patches", "fid", "classification", "noise", "num_patches", "combination", "user_study",
)
PROTOCOL_HEADINGS: dict[str, str] = {"user_study": "User study"}
METRIC_ORDER: tuple[str, ...] = (
    "mask_iou", "appearance_l1", "psnr", "ssim", "l1", "image_dependence", "mask_dependence",
    "image_order_dependence", "mask_order_dependence",
    "preference", "preference_p_value", "realism", "realism_p_value", "bt_score", "patch_recognition",
    "agreement", "fid", "kid", "kid_std", "precision", "recall", "accuracy", "accuracy_std",
)
# Protocols whose headline numbers form the summary (all protocols when none of these has rows).
SUMMARY_PROTOCOLS: tuple[str, ...] = ("patches", "fid", "classification")
# A protocol's headline condition; otherwise the first condition its rows list.
HEADLINE_CONDITIONS: dict[str, str] = {"patches": "key", "num_patches": "N=3"}

METRIC_LABELS: dict[str, str] = {
    "fid": "FID", "kid": "KID", "kid_std": "KID std", "mask_iou": "mask IoU",
    "appearance_l1": "appearance L1", "psnr": "PSNR", "ssim": "SSIM", "l1": "L1",
    "accuracy": "accuracy", "accuracy_std": "accuracy std", "precision": "precision",
    "recall": "recall", "image_dependence": "image dependence", "mask_dependence": "mask dependence",
    "image_order_dependence": "image order dependence", "mask_order_dependence": "mask order dependence",
    "preference": "preference", "realism": "realism vs real", "bt_score": "Bradley-Terry score",
    "patch_recognition": "patch recognition", "agreement": "agreement",
    "preference_p_value": "binomial p (preference)", "realism_p_value": "binomial p (realism)",
}
ARROWS: dict[str, str] = {"higher": "↑", "lower": "↓"}

# Okabe-Ito colours (colour-blind safe), assigned to variants in display order.
PALETTE: tuple[str, ...] = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C6D31",
)
DASHES: tuple[str, ...] = ("", "6 3", "2 3", "8 3 2 3")
REFERENCE_COLOR = "#6b7580"  # baselines and reference lines in plots

IMAGE_TYPES: dict[str, str] = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
}
MAX_IMAGES_PER_GROUP = 6
# Captions of known protocol grids, by (protocol folder, file stem).
IMAGE_CAPTIONS: dict[tuple[str, str], str] = {
    ("patches", "key"): "Columns: real image with its key boxes, the input patches, the generated "
    "image, the predicted mask (when the model has one), the nearest-neighbour baseline's answer.",
    ("patches", "random"): "As above, with random patches of the same count and size distribution.",
    ("patches", "memorisation"): "Memorisation check: left column the generated image, right column "
    "the nearest training image in 16x16 pixels. Near-copies would mean the model memorised "
    "training images.",
}
# Images shown first within a protocol's folder (the rest follow in natural order).
IMAGE_ORDER: tuple[str, ...] = ("key", "random", "memorisation")
MAX_IMAGE_BYTES = 4 << 20
REPORT_PACKAGES: tuple[str, ...] = (
    "kpbench", "torch", "torchvision", "torch-fidelity", "numpy", "pandas", "scikit-learn",
    "scikit-image", "opencv-contrib-python-headless", "pillow",
)

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


@dataclass(frozen=True)
class ReportResult:
    directory: Path
    html: Path
    csv: Path
    markdown: Path
    summary: pd.DataFrame  # see :func:`summary_table`


def build_report(
    workdir: WorkDir,
    name: str = "latest",
    title: str | None = None,
    descriptions: Mapping[str, str] | None = None,
    headlines: Sequence[Headline] | None = None,
    include_images: bool = True,
) -> ReportResult:
    """Read every result row under ``workdir.runs`` and write ``reports/<name>/``.

    ``descriptions`` (protocol -> text) extend and override :data:`DEFAULT_DESCRIPTIONS`;
    ``headlines`` replace the default summary columns (:func:`default_headlines`);
    ``include_images=False`` leaves out the image grids (e.g. when they show photos that must
    not be redistributed).
    """
    _check_report_name(name)
    rows = read_rows(workdir.runs)
    if rows.empty:
        raise KpbenchError(f"no result rows under {workdir.runs}: run `kpbench eval` first")
    rows, run_labels = label_runs(rows, workdir.runs)
    stats = aggregate(rows)
    summary = summary_table(rows, headlines, stats=stats)
    claims, claims_error = _judge_claims(rows)
    context = _Context(
        workdir=workdir,
        name=name,
        title=title or f"kpbench report: {name}",
        rows=rows,
        stats=stats,
        summary=summary,
        descriptions={**DEFAULT_DESCRIPTIONS, **(descriptions or {})},
        variants=variant_order(rows["variant"]),
        protocols=ordered(rows["protocol"], PROTOCOL_ORDER),
        claims=claims,
        claims_error=claims_error,
        run_labels=run_labels,
    )
    directory = workdir.report_dir(name)
    html_path = atomic_write_text(directory / "index.html", _render_html(context, include_images))
    csv_path = atomic_write_text(directory / "results.csv", rows.to_csv(index=False))
    md_path = atomic_write_text(directory / "results.md", _render_markdown(context))
    return ReportResult(directory, html_path, csv_path, md_path, summary)


def label_runs(rows: pd.DataFrame, runs_root: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows whose ``variant`` is the run's label (kpbench.identity): its variant and the identity
    settings that not every run in the report shares, so ``full`` and ``full-random`` (trained
    on random patches) are compared side by side and seeds of one label are aggregated.
    Baseline rows keep only data settings (``baseline:prior_mask-n5``). Also returns run folder
    name -> label. Folders without a config.json (hand-made rows) keep their variant."""
    infos = {info.name: info for info in list_runs(runs_root, problems=[])}  # the report names bad files
    tags = distinguishing_tags({name: info.tags for name, info in infos.items()})
    rows = rows.copy()

    def relabel(variant: str, run: str) -> str:
        return run_label(variant, tags[run], data_only=is_baseline(variant)) if run in tags else variant

    rows["variant"] = [relabel(v, r) for v, r in zip(rows["variant"], rows["run"])]
    return rows, {name: relabel(info.variant, name) for name, info in infos.items()}


def _check_report_name(name: str) -> None:
    if not name or name in {".", ".."} or Path(name).name != name or "\\" in name:
        raise KpbenchError(f"report name must be a plain folder name, got {name!r}")


# --------------------------------------------------------------------------- aggregation


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (protocol, condition, extractor, metric, variant) with ``mean``, ``std``
    (sample std over seeds, NaN for one seed), ``low``/``high`` (the 95 % interval of
    :func:`kpbench.stats.cell_interval`, NaN when none can be formed), ``seeds`` (seeds with a
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
    records = []
    for key, group in per_seed.groupby(CELL_KEYS, sort=False):
        cell = cell_interval(group["value"].to_numpy(), group["ci_low"].to_numpy(),
                             group["ci_high"].to_numpy())
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
    stats = pd.DataFrame.from_records(
        records, columns=[*CELL_KEYS, "mean", "std", "low", "high", "seeds", "valued", "n_min", "n_max"]
    )
    notes = rows.groupby(CELL_KEYS, sort=False)["note"].agg(_join_notes).rename("notes")
    stats = stats.join(notes, on=CELL_KEYS)
    stats["best"] = _best_flags(stats)
    return stats


def _join_notes(notes: pd.Series) -> str:
    return "\n".join(dict.fromkeys(note for note in notes if note))


def _best_flags(stats: pd.DataFrame) -> pd.Series:
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
    return (sorted(trained, key=lambda label: _label_rank(label, registered))
            + sorted(baselines, key=lambda label: _label_rank(label, BASELINE_ORDER)))


def _label_rank(label: str, order: Sequence[str]) -> tuple[int, str, str]:
    """Sort key of a run label among names in ``order``: the longest name the label is or starts
    with (``full-random`` -> ``full``, ``baseline:prior_mask-n2`` -> ``baseline:prior_mask``)
    gives its place, the plain name before its labelled runs; unknown labels last."""
    for name in sorted(order, key=len, reverse=True):
        if label == name or label.startswith(name + "-"):
            return order.index(name), name, label[len(name):]
    return len(order), label, ""


def variant_label(variant: str) -> str:
    """A variant as shown: trained variants as named, ``baseline:prior_mask`` as
    ``prior mask (floor)``."""
    if is_baseline(variant):
        return variant[len(BASELINE_PREFIX):].replace("_", " ") + " (floor)"
    return variant


def default_headlines(rows: pd.DataFrame) -> list[Headline]:
    """Summary columns: for each protocol in :data:`SUMMARY_PROTOCOLS` (every protocol when none
    has rows), every metric except within-run spreads (``*_std``) under the protocol's headline
    condition: :data:`HEADLINE_CONDITIONS`, else the first condition its rows list."""
    protocols = ordered(rows["protocol"], PROTOCOL_ORDER)
    chosen = [protocol for protocol in protocols if protocol in SUMMARY_PROTOCOLS] or protocols
    headlines = []
    for protocol in chosen:
        of_protocol = rows[rows["protocol"] == protocol]
        conditions = list(dict.fromkeys(of_protocol["condition"]))
        preferred = HEADLINE_CONDITIONS.get(protocol)
        condition = preferred if preferred in conditions else conditions[0]
        of_condition = of_protocol[of_protocol["condition"] == condition]
        for extractor in dict.fromkeys(of_condition["extractor"]):
            metrics = of_condition.loc[of_condition["extractor"] == extractor, "metric"]
            for metric in ordered(metrics, METRIC_ORDER):
                if not metric.endswith("_std"):
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
            column: column_decimals(group["mean"], group["std"])
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


# The columns a terminal has room for (the HTML report shows every headline column).
TERMINAL_METRICS: tuple[str, ...] = ("mask_iou", "ssim", "image_dependence", "fid", "kid", "accuracy")


def print_summary(summary: pd.DataFrame, console: Console,
                  metrics: Sequence[str] | None = TERMINAL_METRICS) -> None:
    """The summary as a rich table (best per column in bold green, baselines in dim italics,
    each value's 95 % interval below it), notes numbered below. ``metrics`` picks the columns
    (None: all); the report's HTML has them all."""
    if summary.empty:
        console.print("no headline metrics to summarise")
        return
    if metrics is not None and summary["metric"].isin(metrics).any():
        summary = summary[summary["metric"].isin(metrics)]
    table = Table(
        title="kpbench summary: mean ± std over seeds, [95 % interval] below (more columns in "
        "the report)", title_justify="left"
    )
    table.add_column("variant", style="bold")
    columns, grid = _summary_grid(summary)
    footnotes = _Footnotes()
    for column in columns:
        heading = metric_heading(column.metric) + _text_refs(column.shared_notes, footnotes)
        table.add_column(Text("\n".join([heading, *column.context_lines])), justify="right",
                         overflow="fold")
    for variant, cells in grid:
        floor = is_baseline(variant)
        row: list[Text] = [Text(variant_label(variant), style="italic dim" if floor else "")]
        for column, cell in zip(columns, cells):
            if cell is None:
                row.append(Text("–"))
                continue
            text = cell["text"] + _text_refs(own_notes(cell, column.shared_notes), footnotes)
            value = Text(text, style="bold green" if cell["best"] else "italic" if floor else "")
            if cell["interval"]:  # on its own line, without the space, to keep columns narrow
                value.append("\n" + cell["interval"].replace(", ", ","), style="dim")
            row.append(value)
        table.add_row(*row)
    console.print(table)
    for number, note in footnotes.numbered():
        console.print(Text(f"[{number}] {note}", style="dim"))


# --------------------------------------------------------------------------- formatting


def ordered(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    """Distinct values: those in ``preferred`` first in its order, the rest alphabetically."""
    rank = {value: index for index, value in enumerate(preferred)}
    return sorted(dict.fromkeys(values), key=lambda value: (rank.get(value, len(rank)), value))


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def metric_heading(metric: str) -> str:
    """``"FID ↓"``: the label with the direction in which the metric improves."""
    arrow = ARROWS.get(metric_direction(metric) or "", "")
    return f"{metric_label(metric)} {arrow}".rstrip()


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


def format_mean_std(mean: float, std: float, decimals: int | None = None) -> str:
    """``"0.734 ± 0.012"`` with ``decimals`` (see :func:`column_decimals`); without them the
    spread gets two significant digits and the mean the same decimal place. The mean alone
    when there is no spread (one seed)."""
    mean_text, std_text = _split_mean_std(mean, std, decimals)
    return f"{mean_text} ± {std_text}" if std_text else mean_text


def format_interval(low: float, high: float, decimals: int | None = None) -> str:
    """``"[0.580, 0.610]"`` with ``decimals`` (else :func:`format_number`); "" without one."""
    if math.isnan(low) or math.isnan(high):
        return ""
    if decimals is None:
        return f"[{format_number(low)}, {format_number(high)}]"
    return f"[{low:.{decimals}f}, {high:.{decimals}f}]"


def _split_mean_std(mean: float, std: float, decimals: int | None = None) -> tuple[str, str]:
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


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


class _Footnotes:
    """Numbers distinct notes in order of first use (shared by every cell of one table);
    ``prefix`` keeps the notes' element ids unique within a page."""

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

    def html(self) -> str:
        if not self._numbers:
            return ""
        items = "".join(
            f'<li id="{self.prefix}{number}" value="{number}"'
            + (' class="missing">' if note in self._explain_missing else ">")
            + f"{esc(note)}</li>"
            for number, note in self.numbered()
        )
        return f'<ol class="notes">{items}</ol>'

    def ref_html(self, notes: str, missing: bool = False) -> str:
        refs = self.refs(notes, missing)
        if not refs:
            return ""
        links = ",".join(f'<a href="#{self.prefix}{number}">{number}</a>' for number in refs)
        return f'<sup class="ref">{links}</sup>'


# --------------------------------------------------------------------------- context


@dataclass
class _Context:
    workdir: WorkDir
    name: str
    title: str
    rows: pd.DataFrame
    stats: pd.DataFrame
    summary: pd.DataFrame
    descriptions: dict[str, str]
    variants: list[str]
    protocols: list[str]
    claims: list[ClaimResult] = field(default_factory=list)
    claims_error: str = ""  # why the claims could not be checked
    run_labels: dict[str, str] = field(default_factory=dict)  # run folder -> label (label_runs)
    problems: list[str] = field(default_factory=list)
    _footnote_tables: int = 0

    def footnotes(self) -> _Footnotes:
        """Footnotes for one table, with ids unique within the page."""
        self._footnote_tables += 1
        return _Footnotes(prefix=f"t{self._footnote_tables}-note-")

    def seeds(self, variant: str) -> list[int]:
        return sorted({int(seed) for seed in self.rows.loc[self.rows["variant"] == variant, "seed"]})

    @property
    def trained(self) -> list[str]:
        """The variants that are trained runs (no baselines), in display order."""
        return [variant for variant in self.variants if not is_baseline(variant)]

    def run_dir(self, variant: str, seed: int) -> Path:
        """The folder of the run shown as ``variant`` (a label) with ``seed``."""
        names = sorted(self.rows.loc[(self.rows["variant"] == variant) & (self.rows["seed"] == seed), "run"])
        if names:
            return self.workdir.runs / names[0]
        labelled = sorted(n for n, text in self.run_labels.items() if text == variant)
        matching = [n for n in labelled if n.endswith(f"-seed{seed}")]
        return self.workdir.runs / (matching[0] if matching else f"{variant}-seed{seed}")

    def runs(self) -> list[tuple[str, int]]:
        """(variant, seed) of every trained run with rows (baselines have no run of their own)."""
        return [(variant, seed) for variant in self.trained for seed in self.seeds(variant)]

    def read_json(self, path: Path) -> Any:
        """Parsed JSON, or None when the file is absent; unreadable files are recorded."""
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            self.problems.append(f"{path}: {error}")
            return None


# --------------------------------------------------------------------------- HTML

CSS = """
:root { --fg: #1b1f24; --muted: #5f6b76; --rule: #d5dae0; --strong-rule: #2b2f33;
  --best: #e8f3ea; --warn: #9a5b00; --warn-bg: #fff7e6; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue",
  "Noto Sans", "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1160px; margin: 0 auto; padding: 36px 40px 72px; }
h1 { font-size: 27px; line-height: 1.25; margin: 0 0 6px; font-weight: 650; letter-spacing: -0.01em; }
h2 { font-size: 20px; margin: 40px 0 10px; padding-bottom: 5px; border-bottom: 1px solid var(--rule);
  font-weight: 620; }
h3 { font-size: 16px; margin: 26px 0 6px; font-weight: 620; }
h4 { font-size: 14px; margin: 18px 0 6px; font-weight: 600; color: #3a434c; }
p { margin: 6px 0 10px; max-width: 80ch; }
a { color: #0b5cad; text-decoration: none; }
a:hover { text-decoration: underline; }
.meta { color: var(--muted); font-size: 13.5px; margin: 0 0 14px; max-width: none; }
nav.toc { font-size: 13.5px; padding: 10px 14px; background: #f6f8fa; border-radius: 6px; }
nav.toc a { margin-right: 14px; white-space: nowrap; }
.explain { color: var(--muted); font-size: 13px; }
.table-wrap { overflow-x: auto; margin: 8px 0 4px; }
table.data { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums;
  border-top: 1.5px solid var(--strong-rule); border-bottom: 1.5px solid var(--strong-rule); }
table.data th, table.data td { padding: 3px 9px; text-align: left; vertical-align: top; }
table.data thead th { border-bottom: 1px solid var(--strong-rule); font-weight: 600;
  white-space: nowrap; vertical-align: bottom; }
table.data tbody + tbody { border-top: 1px solid var(--rule); }
table.data tbody th { font-weight: 600; }
table.data .num { text-align: right; white-space: nowrap; }
table.data td.best { font-weight: 700; background: var(--best); }
table.data td.missing { color: var(--warn); }
table.data .ctx { display: block; font-weight: 400; color: var(--muted); font-size: 11.5px;
  line-height: 1.3; }
table.data thead .ctx { white-space: normal; min-width: 7em; }
.spread { color: var(--muted); font-weight: 400; }
td.best .spread { color: #3c5a44; }
.ci { display: block; color: var(--muted); font-weight: 400; font-size: 11.5px; line-height: 1.25; }
td.best .ci { color: #3c5a44; }
tr.baseline td, tr.baseline th { font-style: italic; color: #4a545e; background: #f7f8fa; }
.nowrap { white-space: nowrap; }
tr.baseline .floor { font-style: normal; font-size: 11.5px; color: var(--muted); }
tr.first-floor td, tr.first-floor th { border-top: 1px dashed #aab3bc; }
.verdict { font-weight: 650; white-space: nowrap; padding: 1px 8px; border-radius: 10px;
  border: 1px solid currentColor; font-size: 12.5px; }
.verdict.holds { color: #1d6b35; background: #e8f3ea; }
.verdict.fails { color: #a3271b; background: #fbeae8; }
.verdict.inconclusive { color: #7a5a00; background: #fff7e0; }
table.claims { width: 100%; }
table.claims td.claim { width: 17em; }
table.claims details > summary { font-size: 12px; margin: 3px 0 0; }
table.claims table.data { margin-top: 4px; font-size: 12px; }
table.evidence th, table.evidence td { white-space: nowrap; padding: 2px 7px; }
.muted { color: var(--muted); }
sup.ref { font-size: 10px; margin-left: 2px; }
ol.notes { font-size: 12.5px; color: var(--muted); margin: 6px 0 14px; padding-left: 26px;
  max-width: 110ch; }
ol.notes li { margin: 2px 0; }
ol.notes li.missing { color: var(--warn); }
.callout { font-size: 13px; color: var(--warn); background: var(--warn-bg);
  border-left: 3px solid #e0a030; padding: 6px 12px; margin: 8px 0; }
.plots { display: flex; flex-wrap: wrap; gap: 10px 26px; margin: 10px 0 4px; }
.plots figure { margin: 0; }
.plots figcaption { font-size: 13px; font-weight: 600; margin-bottom: 2px; }
.legend { font-size: 12.5px; color: var(--muted); margin: 2px 0 10px; }
.legend span.item { margin-right: 16px; white-space: nowrap; }
.legend svg { vertical-align: middle; margin-right: 4px; }
.images { display: flex; flex-wrap: wrap; gap: 14px 20px; align-items: flex-start; }
.images figure { margin: 0; max-width: 100%; }
.images img { display: block; max-width: 100%; height: auto; border: 1px solid var(--rule); }
.images figcaption { font-size: 12px; color: var(--muted); margin-top: 3px; }
details > summary { cursor: pointer; font-size: 13.5px; color: var(--muted); margin: 6px 0; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono",
  monospace; font-size: 12.5px; }
table.kv td.mono { word-break: break-all; }
footer { margin-top: 48px; font-size: 12px; color: var(--muted); }
"""


def _render_html(context: _Context, include_images: bool = True) -> str:
    sections: list[tuple[str, str, str]] = [
        ("summary", "Summary", _summary_section(context)),
        ("claims", "Paper's claims", _claims_section(context)),
    ]
    for index, protocol in enumerate(context.protocols):
        heading = PROTOCOL_HEADINGS.get(protocol, protocol)
        sections.append((_anchor(index, protocol), heading, _protocol_section(context, protocol)))
    curves = _training_curves_section(context)
    if curves:
        sections.append(("training-curves", "Training curves", curves))
    if include_images:
        sections.append(("images", "Images", _images_section(context)))
    sections.append(("variants", "Variants", _variants_section(context)))
    sections.append(("configuration", "Training configuration", _configuration_section(context)))
    # Provenance last: it lists files the other sections could not read.
    sections.append(("provenance", "Provenance", _provenance_section(context)))
    toc = "".join(f'<a href="#{anchor}">{esc(heading)}</a>' for anchor, heading, _ in sections)
    body = "".join(
        f'<section id="{anchor}"><h2>{esc(heading)}</h2>{content}</section>'
        for anchor, heading, content in sections
    )
    seeds = sorted({int(seed) for seed in context.rows["seed"]})
    floors = len(context.variants) - len(context.trained)
    baselines = f" · {floors} baselines" if floors else ""
    meta = (
        f"Report <code>{esc(context.name)}</code> · generated {esc(_now())} · "
        f"{len(context.trained)} variants{baselines} · seeds {esc(', '.join(map(str, seeds)))} · "
        f"{len(context.protocols)} protocols · {len(context.rows)} result rows"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(context.title)}</title><style>{CSS}</style></head><body><main>"
        f'<header><h1>{esc(context.title)}</h1><p class="meta">{meta}</p>'
        f'<nav class="toc">{toc}</nav></header>{body}'
        "<footer>Holistic image generation from key local patches (Lee et al., ECCV 2018): "
        "benchmark report written by kpbench.</footer></main></body></html>\n"
    )


def _anchor(index: int, text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return f"p{index}-{slug}" if slug else f"p{index}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class _SummaryColumn:
    key: str
    metric: str
    context_lines: list[str]  # protocol · condition, extractor, n
    n_uniform: bool  # every variant evaluated on the same n (else each cell says its n)
    decimals: int | None
    shared_notes: str  # notes on every value of the column, referenced from its heading


def _summary_grid(summary: pd.DataFrame) -> tuple[list[_SummaryColumn], list[tuple[str, list[Any]]]]:
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
        columns.append(_SummaryColumn(
            key=str(key),
            metric=first["metric"],
            context_lines=[line for line in lines if line],
            n_uniform=n_min == n_max,
            decimals=column_decimals(cells["mean"], cells["std"]),
            shared_notes=shared_notes(cells),
        ))
    cells_by_key = {(row["column"], row["variant"]): row for _, row in summary.iterrows()}
    rows = [
        (variant, [cells_by_key.get((column.key, variant)) for column in columns])
        for variant in variant_order(summary["variant"])  # baselines last, whichever columns they have
    ]
    return columns, rows


def _summary_section(context: _Context) -> str:
    if context.summary.empty:
        return '<p class="muted">No headline metrics.</p>'
    notes = context.footnotes()
    columns, grid = _summary_grid(context.summary)
    head = ["<th>variant</th>", '<th class="num">seed ids</th>'] + [
        f'<th class="num" data-column="{esc(column.key)}">{esc(metric_heading(column.metric))}'
        + notes.ref_html(column.shared_notes)
        + "".join(f'<span class="ctx">{esc(line)}</span>' for line in column.context_lines)
        + "</th>"
        for column in columns
    ]
    body = []
    previous = None
    for variant, cells in grid:
        seeds = ", ".join(map(str, context.seeds(variant)))
        row = [f"<th>{_variant_html(variant)}</th>", f'<td class="num">{esc(seeds)}</td>']
        for column, cell in zip(columns, cells):
            if cell is None:
                row.append('<td class="num muted">–</td>')
            else:
                row.append(_value_cell(
                    cell, notes, column.key, column.decimals, column.shared_notes, not column.n_uniform
                ))
        body.append(f"<tr{_row_attributes(variant, previous)}>{''.join(row)}</tr>")
        previous = variant
    return (
        f'<p class="explain">{UNCERTAINTY_EXPLAINED} Each protocol\'s section below has every '
        "condition.</p>"
        f'<div class="table-wrap"><table class="data" id="summary-table"><thead><tr>{"".join(head)}'
        f'</tr></thead><tbody>{"".join(body)}</tbody></table></div>{notes.html()}'
    )


UNCERTAINTY_EXPLAINED = (
    "Each cell: the mean over seeds, “±” the sample standard deviation over seeds (spread "
    "between training runs; absent for one seed), and below it in brackets the 95 % interval: "
    "the bootstrap interval over test images, widened to the t-interval over seeds when there "
    "are several (none for FID/KID from one seed). n is the number of evaluated samples per "
    "seed. ↑: higher is better, ↓: lower is better. <b>Bold</b>: best trained variant of a "
    "column, marked only where its interval is separated from every other trained variant's; "
    "spreads (e.g. KID std) are never ranked. <i>Italic</i> rows are baselines that need no "
    "learning: floors to read the variants against, never ranked."
)


def _variant_html(variant: str) -> str:
    """A variant's name for a table cell; a baseline as ``prior mask`` with a ``(floor)`` tag."""
    if not is_baseline(variant):
        return esc(variant)
    name = variant_label(variant).removesuffix(" (floor)")
    return f'<span class="nowrap">{esc(name)} <span class="floor">(floor)</span></span>'


def _row_attributes(variant: str, previous: str | None) -> str:
    """``data-variant`` and, for a baseline, its classes (the first after a trained variant is
    set off by a rule)."""
    if not is_baseline(variant):
        return f' data-variant="{esc(variant)}"'
    first = previous is not None and not is_baseline(previous)
    return f' data-variant="{esc(variant)}" class="baseline{" first-floor" if first else ""}"'


def shared_notes(cells: pd.DataFrame) -> str:
    """Notes carried by every value of a column (two or more): said once, in its heading."""
    valued = [notes.split("\n") for notes in cells.loc[cells["mean"].notna(), "notes"]]
    if len(valued) < 2:
        return ""
    return "\n".join(note for note in valued[0] if note and all(note in other for other in valued[1:]))


def own_notes(cell: Any, shared: str) -> str:
    """A cell's notes less those its column's heading gives; a missing value keeps them all."""
    if not shared or math.isnan(cell["mean"]):
        return cell["notes"]
    dropped = set(shared.split("\n"))
    return "\n".join(note for note in cell["notes"].split("\n") if note not in dropped)


def _value_cell(
    cell: Any, notes: _Footnotes, column: str, decimals: int | None, shared: str, show_n: bool = False
) -> str:
    """A ``<td>`` with the formatted value and its interval, the exact numbers as data attributes
    (``data-seeds``: how many seeds the mean is over), note refs, and n or a partial seed count
    when needed."""
    mean, std = float(cell["mean"]), float(cell["std"])
    low, high = float(cell["low"]), float(cell["high"])
    classes = ["num"]
    if cell["best"]:
        classes.append("best")
    if math.isnan(mean):
        classes.append("missing")
    mean_text, std_text = _split_mean_std(mean, std, decimals)
    content = esc(mean_text)
    if std_text:
        content += f'<span class="spread"> ± {esc(std_text)}</span>'
    content += notes.ref_html(own_notes(cell, shared), missing=math.isnan(mean))
    interval = "" if math.isnan(mean) else format_interval(low, high, decimals)
    if interval:
        content += f'<span class="ci" title="95 % interval">{esc(interval)}</span>'
    if 0 < cell["valued"] < cell["seeds"]:
        content += f'<span class="ctx">{int(cell["valued"])} of {int(cell["seeds"])} seeds</span>'
    if show_n:
        content += f'<span class="ctx">n={esc(format_n(cell["n_min"], cell["n_max"]))}</span>'
    attributes = (
        f'data-column="{esc(column)}" data-mean="{mean!r}" data-std="{std!r}" '
        f'data-low="{low!r}" data-high="{high!r}" data-seeds="{int(cell["valued"])}"'
    )
    return f'<td class="{" ".join(classes)}" {attributes}>{content}</td>'


def _protocol_section(context: _Context, protocol: str) -> str:
    parts = []
    description = context.descriptions.get(protocol)
    if description:
        parts.append(f"<p>{esc(description)}</p>")
    parts.append(
        '<p class="explain">Mean ± std over seeds, the 95 % interval below it (see the summary); '
        "<i>italic</i> rows are baselines (floors).</p>"
    )
    for extractor, of_extractor in extractor_tables(context.stats[context.stats["protocol"] == protocol]):
        if extractor:
            parts.append(f"<h3>Features: {esc(extractor)}</h3>")
        axis = numeric_axis(list(dict.fromkeys(of_extractor["condition"])))
        if axis is not None:
            parts.append(_plots(context, of_extractor, axis))
        table = _protocol_table(context, of_extractor, axis)
        if axis is not None and len(of_extractor) > 40:
            table = f"<details><summary>Table ({len(of_extractor)} cells)</summary>{table}</details>"
        parts.append(table)
    return "".join(parts)


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


@dataclass(frozen=True)
class _ProtocolGrid:
    """One protocol table: metric columns with their decimals and heading notes, and per
    condition (in axis order when there is one) each variant's statistics indexed by metric."""

    metrics: list[str]
    decimals: dict[str, int | None]
    shared_notes: dict[str, str]
    groups: list[tuple[str, list[tuple[str, pd.DataFrame]]]]


def _protocol_grid(context: _Context, stats: pd.DataFrame, axis: Axis | None) -> _ProtocolGrid:
    by_metric = dict(list(stats.groupby("metric")))
    metrics = ordered(stats["metric"], METRIC_ORDER)
    decimals = {m: column_decimals(by_metric[m]["mean"], by_metric[m]["std"]) for m in metrics}
    conditions = list(dict.fromkeys(stats["condition"]))
    if axis is not None:
        conditions = axis.sort(conditions)
    indexed = stats.set_index(["condition", "variant", "metric"]).sort_index()
    present = set(zip(stats["condition"], stats["variant"]))
    groups = [
        (condition, [
            (variant, indexed.loc[(condition, variant)])
            for variant in context.variants if (condition, variant) in present
        ])
        for condition in conditions
    ]
    return _ProtocolGrid(metrics, decimals, {m: shared_notes(by_metric[m]) for m in metrics}, groups)


def _protocol_table(context: _Context, stats: pd.DataFrame, axis: Axis | None) -> str:
    notes = context.footnotes()
    grid = _protocol_grid(context, stats, axis)
    head = "".join(
        ["<th>condition</th><th>variant</th>", '<th class="num">seeds</th><th class="num">n</th>']
        + [
            f'<th class="num">{esc(metric_heading(metric))}{notes.ref_html(grid.shared_notes[metric])}</th>'
            for metric in grid.metrics
        ]
    )
    bodies = []
    for condition, variants in grid.groups:
        rows = []
        extractor = variants[0][1]["extractor"].iloc[0]
        label = esc(condition or "—")
        if extractor and extractor != condition and stats["extractor"].nunique() > 1:
            label += f'<span class="ctx">features: {esc(extractor)}</span>'
        for number, (variant, cells) in enumerate(variants):
            first = f'<th rowspan="{len(variants)}" scope="rowgroup">{label}</th>' if number == 0 else ""
            n_text = format_n(cells["n_min"].min(), cells["n_max"].max())
            row = [
                first,
                f"<td>{_variant_html(variant)}</td>",
                f'<td class="num">{int(cells["seeds"].max())}</td>',
                f'<td class="num">{esc(n_text)}</td>',
            ]
            for metric in grid.metrics:
                if metric in cells.index:
                    decimals, shared = grid.decimals[metric], grid.shared_notes[metric]
                    row.append(_value_cell(cells.loc[metric], notes, metric, decimals, shared))
                else:
                    row.append('<td class="num muted">–</td>')
            previous = variants[number - 1][0] if number else None
            rows.append(f"<tr{_row_attributes(variant, previous)}>{''.join(row)}</tr>")
        bodies.append(f'<tbody data-condition="{esc(condition)}">{"".join(rows)}</tbody>')
    return (
        f'<div class="table-wrap"><table class="data protocol"><thead><tr>{head}</tr></thead>'
        f'{"".join(bodies)}</table></div>{notes.html()}'
    )


# --------------------------------------------------------------------------- claims

VERDICT_MARKS: dict[str, str] = {"holds": "✓", "fails": "✗", "inconclusive": "?"}


def _judge_claims(rows: pd.DataFrame) -> tuple[list[ClaimResult], str]:
    """:func:`kpbench.claims.check_claims` of ``rows``, or ([], why) when the rows cannot be
    judged (e.g. one cell measured under several extractors)."""
    try:
        return check_claims(rows), ""
    except ValueError as error:
        return [], str(error)


def _verdict_html(verdict: str) -> str:
    kind = verdict if verdict in VERDICT_MARKS else "inconclusive"
    return f'<span class="verdict {kind}">{VERDICT_MARKS[kind]} {esc(verdict)}</span>'


def _number3(value: float) -> str:
    """Three significant digits (as the claims' reasons print them); "n/a" for NaN."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    text = f"{value:#.3g}"
    return text[:-1] if text.endswith(".") else text


def _evidence_numbers(item: Mapping[str, Any]) -> tuple[str, str]:
    """(mean, interval) of one evidence cell as text."""
    low, high = item.get("low", math.nan), item.get("high", math.nan)
    interval = (
        "none" if not all(isinstance(b, (int, float)) and not math.isnan(b) for b in (low, high))
        else f"[{_number3(low)}, {_number3(high)}]"
    )
    return _number3(item.get("mean", math.nan)), interval


def _evidence_table(evidence: Sequence[Mapping[str, Any]]) -> str:
    head = (
        "<th>variant</th><th>protocol</th><th>condition</th><th>features</th><th>metric</th>"
        '<th class="num">mean</th><th class="num">95 % interval</th><th class="num">seeds</th>'
    )
    rows = []
    for item in evidence:
        mean, interval = _evidence_numbers(item)
        rows.append(
            f"<tr><td>{_variant_html(str(item.get('variant', '')))}</td>"
            f"<td>{esc(item.get('protocol', ''))}</td><td>{esc(item.get('condition', ''))}</td>"
            f"<td>{esc(item.get('extractor', '') or '—')}</td>"
            f"<td>{esc(metric_heading(str(item.get('metric', ''))))}</td>"
            f'<td class="num">{esc(mean)}</td><td class="num">{esc(interval)}</td>'
            f'<td class="num">{esc(item.get("seeds", ""))}</td></tr>'
        )
    return (
        f'<div class="table-wrap"><table class="data evidence"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div>'
    )


def _claims_section(context: _Context) -> str:
    explain = (
        '<p class="explain">Each verdict is computed from the result rows by '
        "<code>kpbench.claims</code>, never written by hand. Two numbers differ only when their "
        "95 % intervals are separated; <em>inconclusive</em> means they overlap, the evidence "
        "is mixed or data is missing, and the reason says which.</p>"
    )
    if context.claims_error:
        why = esc(context.claims_error)
        return explain + f'<p class="callout">The claims could not be checked: {why}</p>'
    if not context.claims:
        return explain + '<p class="muted">No claims to check.</p>'
    rows = []
    for number, result in enumerate(context.claims, 1):
        details = (
            f"<details><summary>Evidence ({len(result.evidence)} cells)</summary>"
            f"{_evidence_table(result.evidence)}</details>"
            if result.evidence else ""
        )
        rows.append(
            f'<tr data-verdict="{esc(result.verdict)}"><td class="num">{number}</td>'
            f'<td class="claim">{esc(result.claim)}</td><td>{_verdict_html(result.verdict)}</td>'
            f'<td class="reason">{esc(result.reason)}{details}</td></tr>'
        )
    return (
        f'{explain}<div class="table-wrap"><table class="data claims" id="claims-table"><thead><tr>'
        '<th class="num">#</th><th>claim</th><th>verdict</th><th>reason</th></tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div>'
    )


# --------------------------------------------------------------------------- training curves

_RUN_NAME = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")
DIAGNOSTIC_KEYS: tuple[str, ...] = (
    "mask_iou", "prior_mask_iou", "spatial_l1", "spatial_l1_empty", "spatial_l1_prior", "appearance_l1",
)
PRIOR_DASH, EMPTY_DASH = "6 3", "2 3"


@dataclass
class _RunLog:
    """What a run's ``log.jsonl`` says about training: diagnostics by step and collapse warnings."""

    name: str  # the run folder, e.g. full-seed0
    variant: str
    seed: int | None
    diagnostics: dict[int, dict[str, float]] = field(default_factory=dict)
    warnings: list[tuple[int | None, str]] = field(default_factory=list)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_run_log(path: Path, problems: list[str] | None = None, label: str | None = None) -> _RunLog:
    """Parse one run's ``log.jsonl`` (lines that are not JSON objects are skipped and counted in
    ``problems``); a later entry for the same step replaces an earlier one. ``label``: how the
    report names the run (default: its folder name without the seed)."""
    name = path.parent.name
    match = _RUN_NAME.match(name)
    variant = label or (match["variant"] if match else name)
    log = _RunLog(name, variant, int(match["seed"]) if match else None)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        if problems is not None:
            problems.append(f"{path}: {error}")
        return log
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(entry, dict):
            bad += 1
            continue
        step, logged = _finite(entry.get("step")), entry.get("diagnostics")
        if entry.get("event") == "diagnostics" and step is not None and isinstance(logged, dict):
            values = {key: v for key in DIAGNOSTIC_KEYS if (v := _finite(logged.get(key))) is not None}
            log.diagnostics[int(step)] = values
        elif entry.get("event") == "mask-collapse-warning":
            log.warnings.append((None if step is None else int(step), str(entry.get("message", ""))))
    if bad and problems is not None:
        problems.append(f"{path}: {bad} lines that are not JSON objects skipped")
    return log


def _run_logs(context: _Context) -> list[_RunLog]:
    """Every ``runs/*/log.jsonl``, by variant (display order) and seed."""
    if not context.workdir.runs.is_dir():
        return []
    logs = [
        read_run_log(path, context.problems, context.run_labels.get(path.parent.name))
        for path in sorted(context.workdir.runs.glob("*/log.jsonl"))
        if path.is_file()
    ]
    rank = {variant: index for index, variant in enumerate(variant_order(log.variant for log in logs))}
    return sorted(logs, key=lambda log: (rank[log.variant], -1 if log.seed is None else log.seed, log.name))


def _series(log: _RunLog, key: str) -> list[tuple[float, float, float]]:
    entries = sorted(log.diagnostics.items())
    return [(float(step), values[key], math.nan) for step, values in entries if key in values]


def _reference(logs: Sequence[_RunLog], key: str, x_range: tuple[float, float], dash: str,
               label: str) -> _Line | None:
    """A flat line at the mean of ``key`` over every diagnostics entry of ``logs`` (the prior and
    empty masks do not change during training, so the mean is their one value)."""
    values = [values[key] for log in logs for values in log.diagnostics.values() if key in values]
    if not values:
        return None
    level = statistics.fmean(values)
    return _Line(REFERENCE_COLOR, dash, label, [(x_range[0], level, math.nan), (x_range[1], level, math.nan)])


def _curve_figure(logs: Sequence[_RunLog], colors: Sequence[str], key: str, title: str,
                  references: Sequence[tuple[str, str, str]]) -> str:
    """One plot of ``key`` against step, a line per run, with flat reference lines (key, dash,
    label); "" when no run logged ``key``."""
    lines = [
        _Line(color, "", log.name, points)
        for log, color in zip(logs, colors)
        if (points := _series(log, key))
    ]
    if not lines:
        return ""
    steps = [x for line in lines for x, _, _ in line.points]
    x_range = (min(0.0, *steps), max(steps))  # training starts at step 0
    for ref_key, dash, label in references:
        reference = _reference(logs, ref_key, x_range, dash, label)
        if reference is not None:
            lines.append(reference)
    svg = _svg_plot(lines, "step", title, markers=False, x_min=x_range[0])
    return f"<figure><figcaption>{esc(title)}</figcaption>{svg}</figure>"


def _training_curves_section(context: _Context) -> str:
    """Held-out diagnostics against step for each variant (one line per seed); "" when no run
    has a ``log.jsonl``."""
    logs = _run_logs(context)
    if not logs:
        return ""
    parts = [
        '<p class="explain">From each run\'s <code>log.jsonl</code>: diagnostics on a fixed batch '
        "of held-out test images, logged during training. One solid line per seed (runs are not "
        "averaged: their steps need not coincide). Grey reference lines: the prior mask (mean "
        "training mask, dashed) and the empty mask (dotted), which need no learning. A mask "
        "decoder that stays at or below the prior mask has learned nothing about the input.</p>"
    ]
    if not any(log.diagnostics for log in logs):
        parts.append(
            '<p class="muted">No run logged diagnostics (these runs predate them): retrain to see '
            "training curves.</p>"
        )
    for variant in dict.fromkeys(log.variant for log in logs):
        of_variant = [log for log in logs if log.variant == variant]
        parts.append(f"<h3>{esc(variant)}</h3>")
        with_diagnostics = [log for log in of_variant if log.diagnostics]
        if with_diagnostics:
            colors = [PALETTE[i % len(PALETTE)] for i in range(len(with_diagnostics))]
            figures = [
                _curve_figure(with_diagnostics, colors, "mask_iou", "held-out mask IoU ↑",
                              [("prior_mask_iou", PRIOR_DASH, "prior mask")]),
                _curve_figure(with_diagnostics, colors, "spatial_l1", "spatial L1 ↓",
                              [("spatial_l1_prior", PRIOR_DASH, "prior mask"),
                               ("spatial_l1_empty", EMPTY_DASH, "empty mask")]),
                _curve_figure(with_diagnostics, colors, "appearance_l1", "appearance L1 ↓", []),
            ]
            if not any(figures[:2]):
                parts.append('<p class="muted explain">No predicted-mask diagnostics (no mask decoder).</p>')
            legend = [
                f'<span class="item">{_legend_swatch(color, "")}{esc(log.name)}</span>'
                for log, color in zip(with_diagnostics, colors)
            ]
            if any(figures[:2]):
                legend.append(f'<span class="item">{_legend_swatch(REFERENCE_COLOR, PRIOR_DASH)}'
                              "prior mask</span>")
            if figures[1]:
                legend.append(f'<span class="item">{_legend_swatch(REFERENCE_COLOR, EMPTY_DASH)}'
                              "empty mask</span>")
            parts.append(
                f'<div class="plots">{"".join(figures)}</div><div class="legend">{"".join(legend)}</div>'
            )
        without = [log.name for log in of_variant if not log.diagnostics]
        if without and with_diagnostics:
            parts.append(f'<p class="muted explain">No diagnostics logged by: {esc(", ".join(without))}.</p>')
        elif without:
            parts.append('<p class="muted explain">No diagnostics in its log (a run from before they '
                         "were logged).</p>")
        warnings = [(log.name, step, message) for log in of_variant for step, message in log.warnings]
        if warnings:
            items = "".join(
                f"<li><b>{esc(name)}</b>{'' if step is None else f' · step {step}'}: {esc(message)}</li>"
                for name, step, message in warnings
            )
            parts.append(f'<div class="callout">Mask-collapse warnings:<ul>{items}</ul></div>')
    return "".join(parts)


# --------------------------------------------------------------------------- plots

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
class _Line:
    color: str
    dash: str
    label: str
    points: list[tuple[float, float, float]]  # (x, mean, std); std NaN when one seed


def _plots(context: _Context, stats: pd.DataFrame, axis: Axis) -> str:
    on_axis = stats[stats["condition"].isin(axis.x.keys())]
    metrics = ordered(on_axis["metric"], METRIC_ORDER)
    metrics = [m for m in metrics if not m.endswith("_std")] or metrics
    colors = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(context.trained)}
    colors |= {v: REFERENCE_COLOR for v in context.variants if is_baseline(v)}
    series_names = list(dict.fromkeys(axis.series[c] for c in on_axis["condition"]))
    dashes = {s: DASHES[i % len(DASHES)] for i, s in enumerate(series_names)}
    figures = []
    for metric in metrics:
        of_metric = on_axis[on_axis["metric"] == metric]
        lines = []
        for variant in context.variants:
            for series in series_names:
                points = sorted(
                    (axis.x[row.condition], float(row.mean), float(row.std))
                    for row in of_metric.itertuples()
                    if row.variant == variant and axis.series[row.condition] == series
                )
                if points:
                    label = f"{variant_label(variant)} {series}".strip()
                    lines.append(_Line(colors[variant], dashes[series], label, points))
        if lines:
            svg = _svg_plot(lines, axis.key, metric_heading(metric))
            figures.append(f"<figure><figcaption>{esc(metric_heading(metric))}</figcaption>{svg}</figure>")
    plotted = set(on_axis.loc[on_axis["mean"].notna(), "variant"])
    legend = [
        f'<span class="item">{_legend_swatch(colors[v], "")}{esc(variant_label(v))}</span>'
        for v in context.variants if v in plotted
    ]
    if len(series_names) > 1:
        legend += [
            f'<span class="item">{_legend_swatch("#555", dashes[s])}{esc(s or "(plain)")}</span>'
            for s in series_names
        ]
    return (
        f'<div class="plots">{"".join(figures)}</div><div class="legend">{"".join(legend)}'
        f'<span class="item">error bars: ± std over seeds</span></div>'
    )


def _legend_swatch(color: str, dash: str) -> str:
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<svg width="26" height="10" aria-hidden="true"><line x1="1" y1="5" x2="25" y2="5" '
        f'stroke="{color}" stroke-width="2.2"{dash_attr}/></svg>'
    )


def _svg_plot(lines: list[_Line], x_label: str, y_label: str, markers: bool = True,
              x_min: float | None = None) -> str:
    """A line plot; ``markers=False`` draws bare lines (long series), each with a hover title;
    ``x_min`` extends the x axis down to it."""
    width, height = 330, 220
    left, right, top, bottom = 52, 12, 10, 38
    xs = [x for line in lines for x, _, _ in line.points] + ([] if x_min is None else [x_min])
    ys = [
        value
        for line in lines
        for _, mean, std in line.points
        if not math.isnan(mean)
        for value in ((mean,) if math.isnan(std) else (mean - std, mean + std))
    ]
    if not ys:
        return '<p class="muted">no values</p>'
    distinct_x = sorted(set(xs))
    steps = {round(b - a, 9) for a, b in zip(distinct_x, distinct_x[1:])}
    x_ticks = distinct_x if len(steps) == 1 and len(distinct_x) <= 10 else _nice_ticks(min(xs), max(xs))
    y_ticks = _nice_ticks(min(ys), max(ys))
    x_lo, x_hi = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + (y_hi - y) / (y_hi - y_lo) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(y_label)} against {esc(x_label)}" '
        'font-family="inherit" font-size="10.5">'
    ]
    for tick, label in zip(y_ticks, _tick_labels(y_ticks)):
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e9ed"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end" fill="#5f6b76">'
            f"{esc(label)}</text>"
        )
    for tick, label in zip(x_ticks, _tick_labels(x_ticks)):
        x = px(tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#8a949e"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#5f6b76">'
            f"{esc(label)}</text>"
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#8a949e"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" fill="#1b1f24" '
        f'font-size="11.5">{esc(x_label)}</text>'
    )
    for line in lines:
        parts.append(_svg_line(line, px, py, markers))
    parts.append("</svg>")
    return "".join(parts)


def _svg_line(line: _Line, px: Callable[[float], float], py: Callable[[float], float],
              markers: bool = True) -> str:
    """Polyline segments between finite points, error bars, and markers with hover titles (or,
    without markers, a title on each segment)."""
    parts = []
    segment: list[str] = []
    segments = []
    for x, mean, _ in line.points:
        if math.isnan(mean):
            segments.append(segment)
            segment = []
        else:
            segment.append(f"{px(x):.1f},{py(mean):.1f}")
    segments.append(segment)
    dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
    title = f"<title>{esc(line.label)}</title>"
    for points in segments:
        if len(points) > 1:
            parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{line.color}" '
                f'stroke-width="1.8"{dash}>{"" if markers else title}</polyline>'
            )
        elif points and not markers:  # a lone point would not show as a line
            x, y = points[0].split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2.6" fill="{line.color}">{title}</circle>')
    if not markers:
        return "".join(parts)
    for x, mean, std in line.points:
        if math.isnan(mean):
            continue
        if not math.isnan(std) and std > 0:
            parts.append(
                f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{py(mean - std):.1f}" '
                f'y2="{py(mean + std):.1f}" stroke="{line.color}" stroke-width="1" opacity="0.7"/>'
            )
        title = f"{line.label}: {format_number(x)} → {format_mean_std(mean, std)}"
        parts.append(
            f'<circle cx="{px(x):.1f}" cy="{py(mean):.1f}" r="2.6" fill="{line.color}">'
            f"<title>{esc(title)}</title></circle>"
        )
    return "".join(parts)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 x 10^k) covering [lo, hi]."""
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """The fewest decimals (at least those of the spacing) that keep every tick distinct."""
    spacing = min((b - a for a, b in zip(ticks, ticks[1:])), default=1.0)
    decimals = max(0, -math.floor(math.log10(spacing)))
    while decimals < 6 and len({f"{tick:.{decimals}f}" for tick in ticks}) < len(ticks):
        decimals += 1
    return [f"{tick:.{decimals}f}" for tick in ticks]


# --------------------------------------------------------------------------- images


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_TYPES]
    return sorted(files, key=_natural_key)


def _images_section(context: _Context) -> str:
    """Image grids side by side across variants (each variant's first seed): the latest training
    samples, then each grid the protocols wrote under ``results/<protocol>/``."""
    panels: dict[str, list[tuple[str, Path, Path]]] = {}  # heading -> [(variant, image, run dir)]
    captions: dict[str, str] = {}  # heading -> what the grid shows
    omitted = []
    for variant in context.trained:
        run_dir = context.run_dir(variant, context.seeds(variant)[0])
        samples = _image_files(run_dir / "samples")
        if samples:
            panels.setdefault("training samples, latest", []).append((variant, samples[-1], run_dir))
        results = run_dir / RESULTS_DIRNAME
        folders = {p.name: p for p in results.iterdir() if p.is_dir()} if results.is_dir() else {}
        for name in ordered(folders, PROTOCOL_ORDER):
            images = _image_files(folders[name])
            rank = {stem: index for index, stem in enumerate(IMAGE_ORDER)}
            images.sort(key=lambda path: rank.get(path.stem, len(rank)))  # stable: natural order kept
            for path in images[:MAX_IMAGES_PER_GROUP]:
                heading = f"{name} · {path.stem}"
                panels.setdefault(heading, []).append((variant, path, run_dir))
                if (name, path.stem) in IMAGE_CAPTIONS:
                    captions[heading] = IMAGE_CAPTIONS[name, path.stem]
            if len(images) > MAX_IMAGES_PER_GROUP:
                omitted.append(f"{variant}: {len(images) - MAX_IMAGES_PER_GROUP} more in results/{name}/")
    if not panels:
        return '<p class="muted">No images in the runs\' samples/ or results/&lt;protocol&gt;/.</p>'
    parts = [
        '<p class="explain">Image grids written by training (its latest fixed-input samples) and by '
        "the protocols, for each variant's first seed, side by side.</p>"
    ]
    for heading, images in panels.items():
        figures = "".join(_image_figure(context, variant, path, run_dir) for variant, path, run_dir in images)
        caption = f'<p class="explain">{esc(captions[heading])}</p>' if heading in captions else ""
        parts.append(f'<h4>{esc(heading)}</h4>{caption}<div class="images">{figures}</div>')
    if omitted:
        parts.append(f'<p class="muted explain">Not shown: {esc("; ".join(omitted))}.</p>')
    return "".join(parts)


def _image_figure(context: _Context, variant: str, path: Path, run_dir: Path) -> str:
    label = f"{run_dir.name}/{path.relative_to(run_dir).as_posix()}"
    caption = f"<figcaption><b>{esc(variant)}</b> · {esc(path.name)}</figcaption>"
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            too_large = f"{label}: {size >> 20} MiB, too large to embed"
            return f'<figure><p class="callout">{esc(too_large)}</p>{caption}</figure>'
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as error:
        context.problems.append(f"{path}: {error}")
        return ""
    mime = IMAGE_TYPES[path.suffix.lower()]
    image = f'<img src="data:{mime};base64,{data}" alt="{esc(label)}" title="{esc(label)}">'
    return f"<figure>{image}{caption}</figure>"


# --------------------------------------------------------------------------- specs, config


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested JSON as ``{"a.b": "value"}``; leaves other than strings as compact JSON."""
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value if isinstance(value, str) else json.dumps(value)}


def _first_run_json(context: _Context, variant: str, filename: str) -> tuple[int, Any] | None:
    """``(seed, parsed)`` for the lowest seed of ``variant`` whose run has ``filename``."""
    seeds = context.seeds(variant)
    if not seeds:  # a variant without rows: look at any of its runs on disk
        found = sorted(context.workdir.runs.glob(f"*-seed*/{filename}"))
        seeds = sorted(int(m.group(1)) for p in found
                       if context.run_labels.get(p.parent.name, _RUN_NAME.sub(r"\g<variant>", p.parent.name))
                       == variant and (m := re.search(r"-seed(\d+)$", p.parent.name)))
    for seed in seeds:
        parsed = context.read_json(context.run_dir(variant, seed) / filename)
        if parsed is not None:
            return seed, parsed
    return None


def _variants_section(context: _Context) -> str:
    reference = _first_run_json(context, "full", "spec.json")
    if reference is None:
        return '<p class="muted">No <code>spec.json</code> of a <code>full</code> run found, so the ' \
            "ablations cannot be shown as differences from it.</p>"
    full_seed, full_spec = reference
    full_flat = flatten(full_spec)
    groups = []
    for variant in context.trained:
        if variant == "full":
            continue
        found = _first_run_json(context, variant, "spec.json")
        flat = flatten(found[1]) if found else {}
        # A field that holds each spec's own name (e.g. "name") is no difference worth listing.
        keys = [
            k for k in dict.fromkeys([*full_flat, *flat])
            if full_flat.get(k) != flat.get(k) and (full_flat.get(k), flat.get(k)) != ("full", variant)
        ]
        if found is None or not keys:
            remark = "no spec.json found" if found is None else "same as full"
            groups.append(
                f"<tbody><tr><th>{esc(variant)}</th>"
                f'<td colspan="3" class="muted">{remark}</td></tr></tbody>'
            )
            continue
        rows = []
        for number, key in enumerate(keys):
            first = f'<th rowspan="{len(keys)}" scope="rowgroup">{esc(variant)}</th>' if number == 0 else ""
            rows.append(
                f"<tr>{first}<td class=\"mono\">{esc(key)}</td>"
                f'<td class="mono">{esc(full_flat.get(key, "(absent)"))}</td>'
                f'<td class="mono">{esc(flat.get(key, "(absent)"))}</td></tr>'
            )
        groups.append(f'<tbody>{"".join(rows)}</tbody>')
    diff = (
        '<div class="table-wrap"><table class="data"><thead><tr><th>variant</th><th>field</th>'
        f'<th>full</th><th>this variant</th></tr></thead>{"".join(groups)}</table></div>'
        if groups else ""
    )
    return (
        "<p>Each ablation as its differences from the full model's resolved spec "
        f"(<code>spec.json</code> of each variant's first seed; full: seed {full_seed}).</p>{diff}"
        f"<details><summary>Full model spec ({len(full_flat)} fields)</summary>"
        f"{_kv_table((k, esc(v)) for k, v in full_flat.items())}</details>"
    )


def _configuration_section(context: _Context) -> str:
    configs: dict[tuple[str, int], dict[str, str]] = {}
    for variant, seed in context.runs():
        parsed = context.read_json(context.run_dir(variant, seed) / "config.json")
        if parsed is not None:
            configs[variant, seed] = flatten(parsed)
    if not configs:
        return '<p class="muted">No <code>config.json</code> found in the runs.</p>'
    keys = list(dict.fromkeys(key for flat in configs.values() for key in flat))
    common = [k for k in keys if len({flat.get(k) for flat in configs.values()}) == 1]
    # Keys that only restate a run's variant or seed (its name says them already) are left out.
    varying = [
        k for k in keys
        if k not in common
        and any(flat.get(k) not in {variant, str(seed)} for (variant, seed), flat in configs.items())
    ]
    parts = []
    if varying:
        head = "".join(f'<th class="mono">{esc(k)}</th>' for k in varying)
        body = "".join(
            f"<tr><th>{esc(variant)}-seed{seed}</th>"
            + "".join(f'<td class="mono">{esc(flat.get(k, "–"))}</td>' for k in varying)
            + "</tr>"
            for (variant, seed), flat in configs.items()
        )
        parts.append(
            "<h4>Settings that differ between runs</h4>"
            f'<div class="table-wrap"><table class="data"><thead><tr><th>run</th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )
    if common:
        first = next(iter(configs.values()))
        parts.append("<h4>Settings shared by every run</h4>" + _kv_table((k, esc(first[k])) for k in common))
    return "".join(parts)


# --------------------------------------------------------------------------- provenance


def _provenance_section(context: _Context) -> str:
    parts = ["<h4>Evaluation: samples, seeds and feature extractors</h4>", _evaluation_table(context)]
    merged: dict[str, dict[str, list[str]]] = {}
    for variant, seed in context.runs():
        path = context.run_dir(variant, seed) / RESULTS_DIRNAME / "provenance.json"
        parsed = context.read_json(path)
        if parsed is None:
            continue
        for key, value in flatten(parsed).items():
            merged.setdefault(key, {}).setdefault(value, []).append(f"{variant}-seed{seed}")
    parts.append("<h4>Recorded by the runs (results/provenance.json)</h4>")
    if merged:
        total = len(context.runs())
        rows = []
        for key, values in merged.items():
            if len(values) == 1 and len(next(iter(values.values()))) == total:
                shown = esc(next(iter(values)))
            else:
                shown = "<br>".join(
                    f'{esc(value)} <span class="muted">({esc(", ".join(runs))})</span>'
                    for value, runs in values.items()
                )
            rows.append((key, shown))
        parts.append(_kv_table(rows))
    else:
        parts.append('<p class="muted">No run has a <code>results/provenance.json</code>.</p>')
    environment = {
        "kpbench git revision": _git_revision(Path(__file__).resolve().parent),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{f"version {name}": version for name, version in _package_versions().items()},
    }
    environment_rows = ((k, esc(v)) for k, v in environment.items())
    parts.append("<h4>Environment that wrote this report</h4>" + _kv_table(environment_rows))
    if context.problems:
        items = "".join(f"<li>{esc(problem)}</li>" for problem in context.problems)
        parts.append(f'<div class="callout">Files that could not be read:<ul>{items}</ul></div>')
    return "".join(parts)


def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    """A key/value table; keys are escaped here, values arrive as HTML."""
    body = "".join(f'<tr><td class="mono">{esc(k)}</td><td class="mono">{v}</td></tr>' for k, v in rows)
    return f'<div class="table-wrap"><table class="data kv"><tbody>{body}</tbody></table></div>'


def _evaluation_table(context: _Context) -> str:
    rows = []
    for protocol in context.protocols:
        of_protocol = context.rows[context.rows["protocol"] == protocol]
        for extractor in dict.fromkeys(of_protocol["extractor"]):
            selected = of_protocol[of_protocol["extractor"] == extractor]
            seed_sets = {
                variant: ", ".join(map(str, sorted({int(s) for s in of_variant["seed"]})))
                for variant in context.variants
                if not (of_variant := selected[selected["variant"] == variant]).empty
            }
            if len(set(seed_sets.values())) == 1 and len(seed_sets) == len(context.variants):
                seeds = f"{next(iter(seed_sets.values()))} (every variant)"
            else:
                seeds = "; ".join(f"{variant}: {text}" for variant, text in seed_sets.items())
            missing = int(selected["value"].isna().sum())
            rows.append(
                f"<tr><th>{esc(protocol)}</th><td>{esc(extractor or '—')}</td>"
                f'<td class="num">{esc(format_n(selected["n"].min(), selected["n"].max()))}</td>'
                f"<td>{esc(seeds)}</td>"
                f'<td class="num">{len(selected)}</td><td class="num">{missing}</td></tr>'
            )
    return (
        '<div class="table-wrap"><table class="data"><thead><tr><th>protocol</th><th>feature extractor</th>'
        '<th class="num">n per seed</th><th>seeds</th><th class="num">rows</th>'
        f'<th class="num">missing values</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )


def _git_revision(path: Path) -> str:
    try:
        revision = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{revision} (uncommitted changes)" if status else revision


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in REPORT_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# --------------------------------------------------------------------------- Markdown


def md_escape(value: object) -> str:
    """Text safe inside a Markdown table cell: HTML-escaped, Markdown punctuation and pipes
    backslash-escaped, newlines as spaces."""
    text = html.escape(str(value), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*\[\]|])", r"\\\1", text)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    rule = ["---:" if is_num else "---" for is_num in numeric]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def _md_notes(notes: _Footnotes) -> str:
    """Numbered notes after a table (a blank line first), or nothing."""
    lines = [f"[{number}] {md_escape(note)}  " for number, note in notes.numbered()]
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def _text_refs(cell_notes: str, notes: _Footnotes) -> str:
    """`` [1,2]``: plain-text references to numbered notes."""
    refs = notes.refs(cell_notes)
    return " [" + ",".join(map(str, refs)) + "]" if refs else ""


def _md_value(text: str, best: bool, cell_notes: str, notes: _Footnotes, interval: str = "") -> str:
    """``**0.720 ± 0.028** [1] [0.680, 0.760]``: value (bold when best), note refs, interval."""
    text = f"**{text}**" if best else text
    text += _text_refs(cell_notes, notes)
    return f"{text} {interval}" if interval else text


def _md_variant(variant: str) -> str:
    """A variant for a Markdown cell; baselines in italics with their ``(floor)`` tag."""
    return f"*{md_escape(variant_label(variant))}*" if is_baseline(variant) else md_escape(variant)


def _md_claims(context: _Context) -> str:
    lines = [
        "## Paper's claims\n",
        "Verdicts computed from the rows by `kpbench.claims`: two numbers differ only when their 95 % "
        "intervals are separated.\n",
    ]
    if context.claims_error:
        return "\n".join([*lines, f"The claims could not be checked: {md_escape(context.claims_error)}\n"])
    rows = [
        [str(number), md_escape(result.claim),
         f"{VERDICT_MARKS.get(result.verdict, '?')} {md_escape(result.verdict)}", md_escape(result.reason)]
        for number, result in enumerate(context.claims, 1)
    ]
    lines.append(_md_table(["#", "claim", "verdict", "reason"], rows, [True, False, False, False]))
    evidence = []
    for number, result in enumerate(context.claims, 1):
        for item in result.evidence:
            mean, interval = _evidence_numbers(item)
            cell = " · ".join(
                md_escape(part) for part in (
                    variant_label(str(item.get("variant", ""))), item.get("protocol", ""),
                    item.get("condition", ""), item.get("extractor", ""), item.get("metric", ""),
                ) if part
            )
            evidence.append(f"- {number}: {cell}: {mean} {interval} "  # numbers: nothing to escape
                            f"({md_escape(item.get('seeds', ''))} seeds)")
    if evidence:
        lines.append("Evidence (95 % intervals):\n\n" + "\n".join(evidence) + "\n")
    return "\n".join(lines)


def _render_markdown(context: _Context) -> str:
    lines = [
        f"# {md_escape(context.title)}\n",
        f"Generated {_now()}. Mean ± sample standard deviation over seeds, then in brackets the 95 % "
        "interval (bootstrap over test images, widened to the t-interval over seeds when there are "
        "several); n = evaluated samples per seed; **bold** = best trained variant of a column, only "
        "where its interval is separated from every other trained variant's (↑ higher is better, "
        "↓ lower is better; spreads such as KID std are never ranked); *italic* rows are baselines "
        "(floors), never ranked.\n",
        "## Summary\n",
    ]
    if not context.summary.empty:
        notes = _Footnotes()
        columns, grid = _summary_grid(context.summary)
        header = ["variant", "seeds"] + [
            f"{md_escape(metric_heading(column.metric))}{_text_refs(column.shared_notes, notes)} "
            f"({md_escape(', '.join(column.context_lines))})"
            for column in columns
        ]
        rows = [
            [_md_variant(variant), ", ".join(map(str, context.seeds(variant)))]
            + [
                "–" if cell is None
                else _md_value(cell["text"], cell["best"], own_notes(cell, column.shared_notes), notes,
                               cell["interval"])
                for column, cell in zip(columns, cells)
            ]
            for variant, cells in grid
        ]
        lines.append(_md_table(header, rows, [False, False] + [True] * len(columns)) + _md_notes(notes))
    lines.append(_md_claims(context))
    for protocol in context.protocols:
        lines.append(f"## {md_escape(protocol)}\n")
        if context.descriptions.get(protocol):
            lines.append(md_escape(context.descriptions[protocol]) + "\n")
        for extractor, of_extractor in extractor_tables(context.stats[context.stats["protocol"] == protocol]):
            if extractor:
                lines.append(f"Features: {md_escape(extractor)}\n")
            lines.append(_md_protocol_table(context, of_extractor))
    return "\n".join(lines)


def _md_protocol_table(context: _Context, stats: pd.DataFrame) -> str:
    notes = _Footnotes()
    grid = _protocol_grid(context, stats, numeric_axis(list(dict.fromkeys(stats["condition"]))))
    header = ["condition", "variant", "seeds", "n"] + [
        md_escape(metric_heading(m)) + _text_refs(grid.shared_notes[m], notes) for m in grid.metrics
    ]
    rows = []
    for condition, variants in grid.groups:
        for variant, cells in variants:
            row = [
                md_escape(condition or "—"),
                _md_variant(variant),
                str(int(cells["seeds"].max())),
                format_n(cells["n_min"].min(), cells["n_max"].max()),
            ]
            for metric in grid.metrics:
                if metric not in cells.index:
                    row.append("–")
                    continue
                cell = cells.loc[metric]
                text = format_mean_std(cell["mean"], cell["std"], grid.decimals[metric])
                interval = "" if math.isnan(cell["mean"]) else format_interval(
                    cell["low"], cell["high"], grid.decimals[metric])
                row.append(_md_value(text, cell["best"], own_notes(cell, grid.shared_notes[metric]), notes,
                                     interval))
            rows.append(row)
    return _md_table(header, rows, [False, False, True, True] + [True] * len(grid.metrics)) + _md_notes(notes)


# Public names for scripts that draw kpbench's plots outside a report (docs/results/*).
PlotLine = _Line
svg_line_plot = _svg_plot
