"""``results.md``: the summary, the paper's claims and one table per protocol, in Markdown.
Everything from data is escaped with :func:`md_escape`."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence

import pandas as pd

from kpbench.report.aggregation import extractor_tables, numeric_axis, own_notes, protocol_grid, summary_grid
from kpbench.report.formatting import (
    VERDICT_MARKS,
    Footnotes,
    evidence_numbers,
    format_interval,
    format_mean_std,
    format_n,
    metric_heading,
    protocol_heading,
    variant_label,
)
from kpbench.report.sources import ReportData
from kpbench.results import is_baseline


def md_escape(value: object) -> str:
    """Text safe inside a Markdown table cell: HTML-escaped, Markdown punctuation and pipes
    backslash-escaped, newlines as spaces."""
    text = html.escape(str(value), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*\[\]|])", r"\\\1", text)


def render_markdown(data: ReportData, generated: str) -> str:
    lines = [
        f"# {md_escape(data.title)}\n",
        f"Generated {generated}. Mean ± sample standard deviation over seeds, then in brackets the 95 % "
        "interval (hierarchical bootstrap over seeds, then test images, for per-sample metrics, test "
        "images only for one seed; for "
        "one value per run, such as FID, the seeds' spread combined with each row's own interval, "
        "Student's t over seeds, inside the metric's range); n = evaluated samples per seed; "
        "**bold** = best trained variant of a column, only where its interval is separated from "
        "every other trained variant's (↑ higher is better, "
        "↓ lower is better; spreads such as KID std are never ranked); *italic* rows are baselines "
        "(floors), never ranked.\n",
        "## Summary\n",
    ]
    if not data.summary.empty:
        notes = Footnotes()
        columns, grid = summary_grid(data.summary)
        header = ["variant", "seeds"] + [
            f"{md_escape(metric_heading(column.metric))}{notes.text_refs(column.shared_notes)} "
            f"({md_escape(', '.join(column.context_lines))})"
            for column in columns
        ]
        rows = [
            [_md_variant(variant), ", ".join(map(str, data.seeds(variant)))]
            + [
                "–" if cell is None
                else _md_value(cell["text"], cell["best"], own_notes(cell, column.shared_notes), notes,
                               cell["interval"])
                for column, cell in zip(columns, cells)
            ]
            for variant, cells in grid
        ]
        lines.append(_md_table(header, rows, [False, False] + [True] * len(columns)) + _md_notes(notes))
    lines.append(_md_claims(data))
    for protocol in data.protocols:
        lines.append(f"## {md_escape(protocol_heading(protocol))}\n")
        if data.descriptions.get(protocol):
            lines.append(md_escape(data.descriptions[protocol]) + "\n")
        for extractor, of_extractor in extractor_tables(data.stats[data.stats["protocol"] == protocol]):
            if extractor:
                lines.append(f"Features: {md_escape(extractor)}\n")
            lines.append(_md_protocol_table(data, of_extractor))
    return "\n".join(lines)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    rule = ["---:" if is_num else "---" for is_num in numeric]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def _md_notes(notes: Footnotes) -> str:
    """Numbered notes after a table (a blank line first), or nothing."""
    lines = [f"[{number}] {md_escape(note)}  " for number, note in notes.numbered()]
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def _md_value(text: str, best: bool, cell_notes: str, notes: Footnotes, interval: str = "") -> str:
    """``**0.720 ± 0.028** [1] [0.680, 0.760]``: value (bold when best), note refs, interval."""
    text = f"**{text}**" if best else text
    text += notes.text_refs(cell_notes)
    return f"{text} {interval}" if interval else text


def _md_variant(variant: str) -> str:
    """A variant for a Markdown cell; baselines in italics with their ``(floor)`` tag."""
    return f"*{md_escape(variant_label(variant))}*" if is_baseline(variant) else md_escape(variant)


def _md_claims(data: ReportData) -> str:
    lines = [
        "## Paper's claims\n",
        "Verdicts computed by `kpbench.claims` from the rows and their per-sample values. Each claim "
        "is decided on its primary metric alone: a paired difference (hierarchical bootstrap over "
        "seeds, then the same test images) where both sides were scored on the same images, else "
        "per-seed values (unpaired). Holm-Bonferroni over this report's claims (family-wise error "
        "5 %). *equivalent*: the 95 % interval lies within the metric's practical margin; "
        "*underpowered*: neither decided nor equivalent, with how many seeds or test images would "
        "decide it; *missing*: no rows.\n",
    ]
    if data.claims_error:
        return "\n".join([*lines, f"The claims could not be checked: {md_escape(data.claims_error)}\n"])
    rows = [
        [str(number), md_escape(result.claim),
         f"{VERDICT_MARKS.get(result.verdict, '?')} {md_escape(result.verdict)}", md_escape(result.primary),
         md_escape(result.difference), md_escape(result.power), md_escape(result.reason)]
        for number, result in enumerate(data.claims, 1)
    ]
    lines.append(_md_table(["#", "claim", "verdict", "primary metric", "difference [95 % interval]", "power",
                            "reason"], rows, [True] + [False] * 6))
    evidence = []
    for number, result in enumerate(data.claims, 1):
        for item in result.evidence:
            mean, interval = evidence_numbers(item)
            role, what = md_escape(item.get("role", "")), md_escape(item.get("what", ""))
            basis = md_escape(item.get("basis", ""))
            evidence.append(f"- {number} ({role}): {what}: {mean} {interval} ({basis})")
    if evidence:
        lines.append("Evidence (95 % intervals):\n\n" + "\n".join(evidence) + "\n")
    lines.extend(_md_claims_by_source(data))
    return "\n".join(lines)


def _md_claims_by_source(data: ReportData) -> list[str]:
    """The claim check per box source, when the runs were trained on more than one."""
    verdicts = data.box_source_claims
    if verdicts is None:
        return []
    lines = ["### The same claims per box source\n",
             "Each box source's runs judged among themselves (the full model on that source against "
             "the ablations on that source); **changes**: two sources decided the claim differently; "
             "*decided on some sources only*: underpowered elsewhere (fewer seeds or more variance), "
             "not an opposite result.\n"]
    lines.extend(f"- {md_escape(source)}: {md_escape(error)}" for source, error in verdicts.errors.items())
    rows = []
    for claim, by_source in verdicts.claims.items():
        cells = [md_escape(" ".join(by_source[source])) if source in by_source else "–"
                 for source in verdicts.sources]
        change = verdicts.change(claim)
        rows.append([md_escape(claim), *cells, f"**{change}**" if change == "changes" else change])
    lines.append(_md_table(["claim", *map(md_escape, verdicts.sources), ""], rows,
                           [False] * (len(verdicts.sources) + 2)))
    return lines


def _md_protocol_table(data: ReportData, stats: pd.DataFrame) -> str:
    notes = Footnotes()
    grid = protocol_grid(stats, data.variants, numeric_axis(list(dict.fromkeys(stats["condition"]))))
    header = ["condition", "variant", "seeds", "n"] + [
        md_escape(metric_heading(m)) + notes.text_refs(grid.shared_notes[m]) for m in grid.metrics
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
