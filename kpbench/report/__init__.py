"""Comparison reports: every result row under ``runs/`` -> ``reports/<name>/``.

``build_report`` reads the tidy rows that protocols wrote next to each run and writes

    index.html   one self-contained page (inline CSS and SVG, images as data URIs, no scripts)
    results.csv  every tidy row, as read
    results.md   the paper's claims, the summary and one table per protocol, in Markdown

Numbers are aggregated over seeds: a run's rows are first averaged per seed (value, ci_low and
ci_high; a protocol writes one row per cell, so this only matters for duplicates), then each
cell shows the mean, the sample standard deviation (ddof=1, "±") over the seeds that have a
value, and a 95 % interval: for per-sample metrics a hierarchical bootstrap (seeds, then test
images) of the values kept next to the rows (:func:`kpbench.results.read_samples`); for metrics
with one value per run (FID, KID, accuracy), :func:`kpbench.stats.cell_interval` of the seed
values, which combines their spread with the rows' own intervals, kept inside the metric's range.
A NaN value is shown as "n/a" with its row's note (why it is missing and how to fix it) as a
footnote.

A variant is marked *best* in a column only when the metric has a direction
(registered with it, :mod:`kpbench.metricinfo`; spreads such as ``kid_std`` are never ranked), it
has the best mean among the trained variants, and its interval is separated
(:func:`kpbench.stats.separated`) from every other trained variant's interval in that column.
Baselines (variants ``baseline:<name>``) are floors: listed after the trained variants, never
best and never competitors for it.

The page also shows the paper's claims as judged by :func:`kpbench.claims.check_claims`, and
training curves from each run's ``log.jsonl`` diagnostics (held-out mask IoU and spatial L1
against the prior and empty masks), with any mask-collapse warnings.

Everything that comes from data (variant names, conditions, notes, file names, JSON values, log
messages) is escaped by the template engine where it enters the page (Jinja2, autoescaping on), and
Markdown-escaped where it enters ``results.md``.

The package, in the order a report is built:

    aggregation  rows -> per-cell statistics, best marks, summary and table layouts (pure pandas)
    formatting   numbers and names as text, footnote numbering
    sources      the files besides the rows (logs, images, specs, configs, provenance), read in one
                 pass that also collects the files that could not be read
    plots        script-free SVG line plots (ticks and ranges in :func:`plots.plot_frame`)
    provenance   the runs' recorded provenance merged, and the environment that wrote the report
    html         the page laid out as plain values, rendered by ``templates/*.html.j2`` + ``style.css``
    markdown     ``results.md``
    terminal     :func:`print_summary`
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from kpbench.errors import KpbenchError
from kpbench.io import atomic_write_text
from kpbench.metricinfo import metric_label
from kpbench.paths import WorkDir
from kpbench.protocol import reported_protocols
from kpbench.report.aggregation import (
    BASELINE_ORDER,
    CELL_KEYS,
    COLUMN_KEYS,
    STAT_COLUMNS,
    Axis,
    Headline,
    aggregate,
    box_source_verdicts,
    default_headlines,
    extractor_tables,
    judge_claims,
    judge_claims_by_box_source,
    label_runs,
    numeric_axis,
    ordered_protocols,
    own_notes,
    shared_notes,
    summary_table,
    unregistered_notice,
    variant_order,
)
from kpbench.report.formatting import (
    ARROWS,
    VERDICT_MARKS,
    column_decimals,
    format_interval,
    format_mean_std,
    format_n,
    format_number,
    metric_heading,
    ordered,
    protocol_heading,
    variant_label,
)
from kpbench.report.html import render_html
from kpbench.report.markdown import md_escape, render_markdown
from kpbench.report.plots import DASHES, PALETTE, REFERENCE_COLOR, PlotLine, svg_line_plot
from kpbench.report.sources import (
    IMAGE_CAPTIONS,
    IMAGE_ORDER,
    IMAGE_TYPES,
    MAX_IMAGE_BYTES,
    MAX_IMAGES_PER_GROUP,
    ReportData,
    flatten,
    gather,
    read_run_log,
)
from kpbench.report.terminal import TERMINAL_METRICS, print_summary
from kpbench.results import read_rows, read_samples
from kpbench.runs import import_run_variants

__all__ = [
    "ARROWS", "BASELINE_ORDER", "CELL_KEYS", "COLUMN_KEYS", "DASHES", "IMAGE_CAPTIONS", "IMAGE_ORDER",
    "IMAGE_TYPES", "MAX_IMAGES_PER_GROUP", "MAX_IMAGE_BYTES", "PALETTE", "REFERENCE_COLOR",
    "STAT_COLUMNS", "TERMINAL_METRICS", "VERDICT_MARKS", "Axis", "Headline", "PlotLine", "ReportResult",
    "aggregate", "build_report", "column_decimals", "default_headlines", "extractor_tables", "flatten",
    "format_interval", "format_mean_std", "format_n", "format_number", "label_runs", "md_escape",
    "metric_heading", "metric_label", "numeric_axis", "ordered", "ordered_protocols", "own_notes",
    "protocol_descriptions", "protocol_heading", "print_summary", "read_run_log", "shared_notes",
    "summary_table", "svg_line_plot", "variant_label", "variant_order",
]

def protocol_descriptions() -> dict[str, str]:
    """Each registered protocol's paragraph for reports (:attr:`Protocol.report_description`, else
    its description), by name."""
    return {protocol.name: protocol.report_description or protocol.description
            for protocol in reported_protocols()}


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

    ``descriptions`` (protocol -> text) extend and override :func:`protocol_descriptions`;
    ``headlines`` replace the default summary columns (:func:`default_headlines`);
    ``include_images=False`` leaves out the image grids (e.g. when they show photos that must
    not be redistributed).
    """
    _check_report_name(name)
    # Plug-in variants the runs recorded: reports and claims order and judge them as registered.
    for problem in import_run_variants(workdir.runs):
        warnings.warn(problem, stacklevel=2)
    raw_rows = read_rows(workdir.runs)
    if raw_rows.empty:
        raise KpbenchError(f"no result rows under {workdir.runs}: run `kpbench eval` first")
    if (notice := unregistered_notice(raw_rows)) is not None:
        warnings.warn(notice, stacklevel=2)
    raw_samples = read_samples(workdir.runs)
    rows, run_labels = label_runs(raw_rows, workdir.runs)
    samples, _ = label_runs(raw_samples, workdir.runs)
    by_source = judge_claims_by_box_source(raw_rows, workdir.runs, raw_samples)
    stats = aggregate(rows, samples)
    summary = summary_table(rows, headlines, stats=stats)
    claims, claims_error = judge_claims(rows, samples)
    data = ReportData(
        workdir=workdir,
        name=name,
        title=title or f"kpbench report: {name}",
        rows=rows,
        stats=stats,
        summary=summary,
        descriptions={**protocol_descriptions(), **(descriptions or {})},
        variants=variant_order(rows["variant"]),
        protocols=ordered_protocols(rows["protocol"]),
        claims=claims,
        claims_error=claims_error,
        run_labels=run_labels,
        box_source_claims=box_source_verdicts(by_source) if by_source else None,
    )
    sources = gather(data, include_images)  # every file read, every problem known, before rendering
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    directory = workdir.report_dir(name)
    html_path = atomic_write_text(directory / "index.html", render_html(data, sources, generated))
    csv_path = atomic_write_text(directory / "results.csv", rows.to_csv(index=False))
    md_path = atomic_write_text(directory / "results.md", render_markdown(data, generated))
    return ReportResult(directory, html_path, csv_path, md_path, summary)


def _check_report_name(name: str) -> None:
    if not name or name in {".", ".."} or Path(name).name != name or "\\" in name:
        raise KpbenchError(f"report name must be a plain folder name, got {name!r}")
