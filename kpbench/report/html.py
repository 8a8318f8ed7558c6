"""``index.html``: the report data laid out as plain values (strings, numbers, lists), then
rendered by Jinja2 templates with autoescaping on. Laying out is a pure pass: footnote numbers
and the list of unreadable files are known before the first tag is written."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterator, Sequence
from itertools import count
from typing import Any

import pandas as pd
from markupsafe import Markup

from kpbench.metricinfo import ordered_metrics
from kpbench.report.aggregation import (
    Axis,
    extractor_tables,
    numeric_axis,
    own_notes,
    protocol_grid,
    summary_grid,
)
from kpbench.report.formatting import (
    VERDICT_MARKS,
    Footnotes,
    evidence_numbers,
    format_interval,
    format_n,
    metric_heading,
    number3,
    protocol_heading,
    split_mean_std,
    variant_label,
)
from kpbench.report.plots import DASHES, PALETTE, REFERENCE_COLOR, PlotLine, svg_line_plot
from kpbench.report.provenance import environment, merge_runs
from kpbench.report.sources import ReportData, RunLog, Sources
from kpbench.report.templating import template_environment
from kpbench.results import is_baseline

PRIOR_DASH, EMPTY_DASH = "6 3", "2 3"


def render_html(data: ReportData, sources: Sources, generated: str) -> str:
    """The page of ``data`` and ``sources`` (see :mod:`kpbench.report.sources`)."""
    tables = count(1)  # footnote ids per table, unique within the page
    sections = [
        _section("summary", "Summary", "summary", _summary(data, tables)),
        _section("claims", "Paper's claims", "claims", _claims(data)),
    ]
    for index, protocol in enumerate(data.protocols):
        heading = protocol_heading(protocol)
        content = _protocol(data, protocol, tables)
        sections.append(_section(_anchor(index, protocol), heading, "protocol", content))
    if sources.logs:
        sections.append(_section("training-curves", "Training curves", "curves", _curves(sources.logs)))
    if sources.panels is not None:
        sections.append(_section("images", "Images", "images",
                                 {"panels": sources.panels, "omitted": "; ".join(sources.omitted_images)}))
    sections.append(_section("variants", "Variants", "variants", _variants(sources)))
    sections.append(_section("configuration", "Training configuration", "configuration",
                             _configuration(sources)))
    sections.append(_section("provenance", "Provenance", "provenance", _provenance(data, sources)))
    seeds = sorted({int(seed) for seed in data.rows["seed"]})
    page = {
        "title": data.title,
        "name": data.name,
        "generated": generated,
        "trained": len(data.trained),
        "floors": len(data.variants) - len(data.trained),
        "seeds": ", ".join(map(str, seeds)),
        "protocols": len(data.protocols),
        "rows": len(data.rows),
    }
    return template_environment().get_template("page.html.j2").render(page=page, sections=sections)


def _section(anchor: str, heading: str, kind: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"anchor": anchor, "heading": heading, "kind": kind, "content": content}


def _anchor(index: int, text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return f"p{index}-{slug}" if slug else f"p{index}"


# --------------------------------------------------------------------------- tables of numbers


def _variant(variant: str) -> dict[str, Any]:
    """A variant's name for a table cell: ``floor`` for baselines (shown as ``prior mask (floor)``)."""
    floor = is_baseline(variant)
    name = variant_label(variant).removesuffix(" (floor)") if floor else variant
    return {"id": variant, "name": name, "floor": floor}


def _row(variant: str, previous: str | None) -> dict[str, Any]:
    """A row's variant and, for a baseline, whether it is the first after a trained variant (set
    off by a rule)."""
    shown = _variant(variant)
    first_floor = shown["floor"] and previous is not None and not is_baseline(previous)
    return {"variant": shown, "first_floor": first_floor}


def _value_cell(cell: Any, notes: Footnotes, column: str, decimals: int | None, shared: str,
                show_n: bool = False) -> dict[str, Any]:
    """A value with its interval, the exact numbers (``data-*``; ``seeds``: how many seeds the
    mean is over), note refs, and n or a partial seed count when needed."""
    mean, std = float(cell["mean"]), float(cell["std"])
    low, high = float(cell["low"]), float(cell["high"])
    mean_text, std_text = split_mean_std(mean, std, decimals)
    classes = ["num"] + (["best"] if cell["best"] else []) + (["missing"] if math.isnan(mean) else [])
    partial = 0 < cell["valued"] < cell["seeds"]
    return {
        "classes": " ".join(classes),
        "column": column,
        "data": {"mean": repr(mean), "std": repr(std), "low": repr(low), "high": repr(high),
                 "seeds": str(int(cell["valued"]))},
        "mean": mean_text,
        "std": std_text,
        "refs": notes.ref_items(own_notes(cell, shared), missing=math.isnan(mean)),
        "interval": "" if math.isnan(mean) else format_interval(low, high, decimals),
        "partial": f"{int(cell['valued'])} of {int(cell['seeds'])} seeds" if partial else "",
        "n": format_n(cell["n_min"], cell["n_max"]) if show_n else "",
    }


def _summary(data: ReportData, tables: Iterator[int]) -> dict[str, Any]:
    if data.summary.empty:
        return {"empty": True}
    notes = Footnotes(prefix=f"t{next(tables)}-note-")
    columns, grid = summary_grid(data.summary)
    head = [
        {"key": column.key, "heading": metric_heading(column.metric),
         "refs": notes.ref_items(column.shared_notes), "context": column.context_lines}
        for column in columns
    ]
    rows, previous = [], None
    for variant, cells in grid:
        rows.append({
            **_row(variant, previous),
            "seeds": ", ".join(map(str, data.seeds(variant))),
            "cells": [
                None if cell is None else _value_cell(
                    cell, notes, column.key, column.decimals, column.shared_notes, not column.n_uniform)
                for column, cell in zip(columns, cells)
            ],
        })
        previous = variant
    return {"empty": False, "head": head, "rows": rows, "notes": notes.items()}


def _protocol(data: ReportData, protocol: str, tables: Iterator[int]) -> dict[str, Any]:
    parts = []
    for extractor, of_extractor in extractor_tables(data.stats[data.stats["protocol"] == protocol]):
        axis = numeric_axis(list(dict.fromkeys(of_extractor["condition"])))
        parts.append({
            "extractor": extractor,
            "plots": None if axis is None else _plots(data, of_extractor, axis),
            "table": _protocol_table(data, of_extractor, axis, tables),
            "folded": axis is not None and len(of_extractor) > 40,
            "cells": len(of_extractor),
        })
    return {"description": data.descriptions.get(protocol) or "", "parts": parts}


def _protocol_table(data: ReportData, stats: pd.DataFrame, axis: Axis | None,
                    tables: Iterator[int]) -> dict[str, Any]:
    notes = Footnotes(prefix=f"t{next(tables)}-note-")
    grid = protocol_grid(stats, data.variants, axis)
    head = [
        {"heading": metric_heading(metric), "refs": notes.ref_items(grid.shared_notes[metric])}
        for metric in grid.metrics
    ]
    bodies = []
    for condition, variants in grid.groups:
        extractor = variants[0][1]["extractor"].iloc[0]
        mixed = stats["extractor"].nunique() > 1
        features = extractor if extractor and extractor != condition and mixed else ""
        rows = []
        for number, (variant, cells) in enumerate(variants):
            previous = variants[number - 1][0] if number else None
            rows.append({
                **_row(variant, previous),
                "seeds": int(cells["seeds"].max()),
                "n": format_n(cells["n_min"].min(), cells["n_max"].max()),
                "cells": [
                    _value_cell(cells.loc[metric], notes, metric, grid.decimals[metric],
                                grid.shared_notes[metric])
                    if metric in cells.index else None
                    for metric in grid.metrics
                ],
            })
        bodies.append({"condition": condition, "label": condition or "—", "features": features, "rows": rows})
    return {"head": head, "bodies": bodies, "notes": notes.items()}


def _plots(data: ReportData, stats: pd.DataFrame, axis: Axis) -> dict[str, Any]:
    on_axis = stats[stats["condition"].isin(axis.x.keys())]
    metrics = ordered_metrics(on_axis["metric"])
    metrics = [m for m in metrics if not m.endswith("_std")] or metrics
    colors = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(data.trained)}
    colors |= {v: REFERENCE_COLOR for v in data.variants if is_baseline(v)}
    series_names = list(dict.fromkeys(axis.series[c] for c in on_axis["condition"]))
    dashes = {s: DASHES[i % len(DASHES)] for i, s in enumerate(series_names)}
    figures = []
    for metric in metrics:
        of_metric = on_axis[on_axis["metric"] == metric]
        lines = []
        for variant in data.variants:
            for series in series_names:
                points = sorted(
                    (axis.x[row.condition], float(row.mean), float(row.std))
                    for row in of_metric.itertuples()
                    if row.variant == variant and axis.series[row.condition] == series
                )
                if points:
                    label = f"{variant_label(variant)} {series}".strip()
                    lines.append(PlotLine(colors[variant], dashes[series], label, points))
        if lines:
            heading = metric_heading(metric)
            figures.append(_figure(heading, svg_line_plot(lines, axis.key, heading)))
    plotted = set(on_axis.loc[on_axis["mean"].notna(), "variant"])
    legend = [
        {"color": colors[v], "dash": "", "label": variant_label(v)} for v in data.variants if v in plotted
    ]
    if len(series_names) > 1:
        legend += [{"color": "#555", "dash": dashes[s], "label": s or "(plain)"} for s in series_names]
    return {"figures": figures, "legend": legend}


def _figure(caption: str, svg: str) -> dict[str, Any]:
    # The SVG comes from kpbench.report.plots, rendered by its own autoescaping template, so every
    # label in it is escaped; it is markup, so it is marked safe here and nowhere else.
    return {"caption": caption, "svg": Markup(svg)}


# --------------------------------------------------------------------------- claims


def _claims(data: ReportData) -> dict[str, Any]:
    rows = []
    for number, result in enumerate(data.claims, 1):
        kind = result.verdict if result.verdict in VERDICT_MARKS else "underpowered"
        evidence = [{
            "role": item.get("role", ""), "what": item.get("what", ""),
            "mean": number3(item.get("mean", math.nan)), "interval": evidence_numbers(item)[1],
            "basis": item.get("basis", ""),
        } for item in result.evidence]
        rows.append({"number": number, "claim": result.claim, "verdict": result.verdict, "kind": kind,
                     "mark": VERDICT_MARKS[kind], "primary": result.primary, "difference": result.difference,
                     "power": result.power, "reason": result.reason, "evidence": evidence})
    return {"error": data.claims_error, "rows": rows, "by_source": _claims_by_source(data)}


def _claims_by_source(data: ReportData) -> dict[str, Any] | None:
    """The claim check per box source (runs trained on each source judged among themselves)."""
    verdicts = data.box_source_claims
    if verdicts is None:
        return None
    def cell(verdict: str, difference: str) -> dict[str, str]:
        kind = verdict if verdict in VERDICT_MARKS else "underpowered"
        return {"verdict": verdict, "difference": difference, "kind": kind}

    rows = [{"claim": claim, "change": verdicts.change(claim),
             "cells": [cell(*by_source[source]) if source in by_source else None
                       for source in verdicts.sources]}
            for claim, by_source in verdicts.claims.items()]
    errors = [f"{source}: {error}" for source, error in verdicts.errors.items()]
    return {"sources": verdicts.sources, "rows": rows, "errors": errors}


# --------------------------------------------------------------------------- training curves


def _curves(logs: Sequence[RunLog]) -> dict[str, Any]:
    """Held-out diagnostics against step for each variant (one line per seed)."""
    variants = []
    for variant in dict.fromkeys(log.variant for log in logs):
        of_variant = [log for log in logs if log.variant == variant]
        with_diagnostics = [log for log in of_variant if log.diagnostics]
        shown: dict[str, Any] = {"name": variant, "plotted": bool(with_diagnostics)}
        if with_diagnostics:
            colors = [PALETTE[i % len(PALETTE)] for i in range(len(with_diagnostics))]
            figures = [
                _curve_figure(with_diagnostics, colors, "mask_iou", "held-out mask IoU ↑",
                              [("prior_mask_iou", PRIOR_DASH, "prior mask")]),
                _curve_figure(with_diagnostics, colors, "spatial_l1", "spatial loss (L1 summed per image) ↓",
                              [("spatial_l1_prior", PRIOR_DASH, "prior mask"),
                               ("spatial_l1_empty", EMPTY_DASH, "empty mask")]),
                _curve_figure(with_diagnostics, colors, "appearance_l1",
                              "appearance loss (L1 summed per image) ↓", []),
            ]
            legend = [{"color": color, "dash": "", "label": log.name}
                      for log, color in zip(with_diagnostics, colors)]
            if any(figures[:2]):
                legend.append({"color": REFERENCE_COLOR, "dash": PRIOR_DASH, "label": "prior mask"})
            if figures[1]:
                legend.append({"color": REFERENCE_COLOR, "dash": EMPTY_DASH, "label": "empty mask"})
            shown |= {"figures": [f for f in figures if f], "mask": any(figures[:2]), "legend": legend}
        shown["without"] = ", ".join(log.name for log in of_variant if not log.diagnostics)
        shown["warnings"] = [
            {"run": log.name, "step": step, "message": message}
            for log in of_variant for step, message in log.warnings
        ]
        variants.append(shown)
    return {"any_diagnostics": any(log.diagnostics for log in logs), "variants": variants}


def _curve_figure(logs: Sequence[RunLog], colors: Sequence[str], key: str, title: str,
                  references: Sequence[tuple[str, str, str]]) -> dict[str, Any] | None:
    """One plot of ``key`` against step, a line per run, with flat reference lines (key, dash,
    label); None when no run logged ``key``."""
    lines = [
        PlotLine(color, "", log.name, points)
        for log, color in zip(logs, colors)
        if (points := _series(log, key))
    ]
    if not lines:
        return None
    steps = [x for line in lines for x, _, _ in line.points]
    x_range = (min(0.0, *steps), max(steps))  # training starts at step 0
    for ref_key, dash, label in references:
        reference = _reference(logs, ref_key, x_range, dash, label)
        if reference is not None:
            lines.append(reference)
    return _figure(title, svg_line_plot(lines, "step", title, markers=False, x_min=x_range[0]))


def _series(log: RunLog, key: str) -> list[tuple[float, float, float]]:
    entries = sorted(log.diagnostics.items())
    return [(float(step), values[key], math.nan) for step, values in entries if key in values]


def _reference(logs: Sequence[RunLog], key: str, x_range: tuple[float, float], dash: str,
               label: str) -> PlotLine | None:
    """A flat line at the mean of ``key`` over every diagnostics entry of ``logs`` (the prior and
    empty masks do not change during training, so the mean is their one value)."""
    values = [values[key] for log in logs for values in log.diagnostics.values() if key in values]
    if not values:
        return None
    level = statistics.fmean(values)
    ends = [(x_range[0], level, math.nan), (x_range[1], level, math.nan)]
    return PlotLine(REFERENCE_COLOR, dash, label, ends)


# --------------------------------------------------------------------------- specs, config, provenance


def _kv(key: str, value: str) -> dict[str, Any]:
    """One key/value row; ``values`` are (value, runs) lines, runs "" when it holds for all."""
    return {"key": key, "values": [(value, "")]}


def _variants(sources: Sources) -> dict[str, Any]:
    reference = sources.reference_name
    if sources.reference_spec is None:
        return {"reference": reference, "base": None}
    base_seed, base_flat = sources.reference_spec
    groups = []
    for variant, flat in sources.specs.items():
        found = flat is not None
        flat = flat or {}
        # A field that holds each spec's own name (e.g. "name") is no difference worth listing.
        keys = [
            k for k in dict.fromkeys([*base_flat, *flat])
            if base_flat.get(k) != flat.get(k) and (base_flat.get(k), flat.get(k)) != (reference, variant)
        ]
        remark = "" if found and keys else "no spec.json found" if not found else f"same as {reference}"
        groups.append({
            "variant": variant,
            "remark": remark,
            "rows": [(k, base_flat.get(k, "(absent)"), flat.get(k, "(absent)")) for k in keys],
        })
    fields = [_kv(k, v) for k, v in base_flat.items()]
    return {"reference": reference, "base": {"seed": base_seed, "fields": fields}, "groups": groups}


def _configuration(sources: Sources) -> dict[str, Any]:
    configs = sources.configs
    if not configs:
        return {"found": False}
    keys = list(dict.fromkeys(key for flat in configs.values() for key in flat))
    common = [k for k in keys if len({flat.get(k) for flat in configs.values()}) == 1]
    # Keys that only restate a run's variant or seed (its name says them already) are left out.
    varying = [
        k for k in keys
        if k not in common
        and any(flat.get(k) not in {variant, str(seed)} for (variant, seed), flat in configs.items())
    ]
    first = next(iter(configs.values()))
    return {
        "found": True,
        "varying": varying,
        "runs": [(f"{variant}-seed{seed}", [flat.get(k, "–") for k in varying])
                 for (variant, seed), flat in configs.items()],
        "common": [_kv(k, first[k]) for k in common],
    }


def _provenance(data: ReportData, sources: Sources) -> dict[str, Any]:
    total = len(data.runs())
    recorded = []
    for key, values in merge_runs(sources.provenance).items():
        if len(values) == 1 and len(next(iter(values.values()))) == total:
            recorded.append(_kv(key, next(iter(values))))
        else:
            lines = [(value, ", ".join(runs)) for value, runs in values.items()]
            recorded.append({"key": key, "values": lines})
    return {
        "evaluation": _evaluation(data),
        "recorded": recorded,
        "environment": [_kv(k, v) for k, v in environment().items()],
        "problems": sources.problems,
    }


def _evaluation(data: ReportData) -> list[dict[str, Any]]:
    rows = []
    for protocol in data.protocols:
        of_protocol = data.rows[data.rows["protocol"] == protocol]
        for extractor in dict.fromkeys(of_protocol["extractor"]):
            selected = of_protocol[of_protocol["extractor"] == extractor]
            seed_sets = {
                variant: ", ".join(map(str, sorted({int(s) for s in of_variant["seed"]})))
                for variant in data.variants
                if not (of_variant := selected[selected["variant"] == variant]).empty
            }
            if len(set(seed_sets.values())) == 1 and len(seed_sets) == len(data.variants):
                seeds = f"{next(iter(seed_sets.values()))} (every variant)"
            else:
                seeds = "; ".join(f"{variant}: {text}" for variant, text in seed_sets.items())
            rows.append({
                "protocol": protocol,
                "extractor": extractor or "—",
                "n": format_n(selected["n"].min(), selected["n"].max()),
                "seeds": seeds,
                "rows": len(selected),
                "missing": int(selected["value"].isna().sum()),
            })
    return rows
