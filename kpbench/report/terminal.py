"""The summary as a rich table in the terminal."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kpbench.report.aggregation import own_notes, summary_grid
from kpbench.report.formatting import Footnotes, metric_heading, variant_label
from kpbench.results import is_baseline

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
    columns, grid = summary_grid(summary)
    # Wide enough for the longest word of a label: a narrow terminal breaks "nearest neighbour
    # (floor)" between words, never inside "autoencoder".
    words = [word for variant, _ in grid for word in variant_label(variant).split()]
    table.add_column("variant", style="bold", min_width=max(map(len, words), default=7))
    footnotes = Footnotes()
    for column in columns:
        heading = metric_heading(column.metric) + footnotes.text_refs(column.shared_notes)
        table.add_column(Text("\n".join([heading, *column.context_lines])), justify="right",
                         overflow="fold")
    for variant, cells in grid:
        floor = is_baseline(variant)
        row: list[Text] = [Text(variant_label(variant), style="italic dim" if floor else "")]
        for column, cell in zip(columns, cells):
            if cell is None:
                row.append(Text("–"))
                continue
            text = cell["text"] + footnotes.text_refs(own_notes(cell, column.shared_notes))
            value = Text(text, style="bold green" if cell["best"] else "italic" if floor else "")
            if cell["interval"]:  # on its own line; a narrow column breaks it at its space
                value.append("\n" + cell["interval"], style="dim")
            row.append(value)
        table.add_row(*row)
    console.print(table)
    for number, note in footnotes.numbered():
        console.print(Text(f"[{number}] {note}", style="dim"))
