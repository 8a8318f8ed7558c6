"""Draw the initialisation finding: held-out diagnostics of the full model per initialisation.

Usage: python init_curves.py OUT.svg LABEL=RUN_DIR [LABEL=RUN_DIR ...]
Each RUN_DIR's log.jsonl gives one line (held-out mask IoU, spatial L1 per sample) with its label;
runs whose label ends in the same word share a colour. The prior mask's IoU and L1 (identical
for every run of one dataset) are drawn dashed, the empty mask's L1 dotted.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from kpbench.report import PALETTE, PlotLine, svg_line_plot


def diagnostics(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    entries = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    return [(e["step"], e["diagnostics"]) for e in entries if e.get("event") == "diagnostics"]


def main(out: str, specs: list[str]) -> None:
    runs = [(label, diagnostics(Path(path))) for label, path in (spec.split("=", 1) for spec in specs)]
    groups = list(dict.fromkeys(label.split()[0] for label, _ in runs))
    figures = []
    for metric, reference, label_y in (("mask_iou", ("prior_mask_iou", None), "held-out mask IoU"),
                                       ("spatial_l1", ("spatial_l1_prior", "spatial_l1_empty"),
                                        "spatial L1 per sample")):
        lines = []
        for label, entries in runs:
            color = PALETTE[groups.index(label.split()[0]) % len(PALETTE)]
            lines.append(PlotLine(color, "", label, [(s, v[metric], math.nan) for s, v in entries]))
        steps = [s for _, entries in runs for s, _ in entries]
        first = runs[0][1][0][1]
        for name, dash in zip(reference, ("6 3", "2 3")):
            if name:
                level = first[name]
                lines.append(PlotLine("#555555", dash, name.replace("_", " "),
                                      [(min(steps), level, math.nan), (max(steps), level, math.nan)]))
        figures.append(svg_line_plot(lines, "step", label_y, markers=False, x_min=0))
    titles = ("held-out mask IoU (higher is better)", "spatial L1 per sample (lower is better)")
    legend = "".join(f'<text x="10" y="{16 * (i + 1)}" font-size="12" fill="{PALETTE[i % len(PALETTE)]}">'
                     f"&#9472; {group} initialisation</text>" for i, group in enumerate(groups))
    legend += (f'<text x="10" y="{16 * (len(groups) + 1)}" font-size="12" fill="#555555">'
               "- - prior mask (mean training mask)   \u00b7\u00b7\u00b7 empty mask</text>")
    body = "".join(f'<g transform="translate({10 + 340 * i}, 0)"><text x="52" y="14" font-size="12" '
                   f'font-weight="bold">{title}</text><g transform="translate(0, 20)">{figure}</g></g>'
                   for i, (title, figure) in enumerate(zip(titles, figures)))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="700" height="{265 + 16 * (len(groups) + 1)}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>{body}'
           f'<g transform="translate(0, 248)">{legend}</g></svg>')
    Path(out).write_text(svg)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
