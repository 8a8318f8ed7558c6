"""Per-sample values next to the rows: written and removed with them, read back by image id."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from kpbench.paths import RunDir
from kpbench.results import ResultRow, read_samples, sample_matrices, write_rows


def values(variant: str, ids: list[int], repeat: int = 0, offset: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"variant": variant, "condition": "key", "metric": "mask_iou", "extractor": "",
                         "sample": ids, "repeat": repeat, "value": [offset + i / 100 for i in ids]})


def test_samples_are_written_read_and_removed_with_their_rows(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "full-seed3"
    row = ResultRow("full", 3, "patches", "key", "mask_iou", 0.5, 3)
    write_rows(run, "patches", [row], pd.concat([values("full", [4, 8, 15]),
                                                 values("baseline:prior_mask", [4, 8, 15])]))
    read = read_samples(tmp_path / "runs")
    assert set(read["seed"]) == {3} and set(read["protocol"]) == {"patches"}
    assert set(read["run"]) == {"full-seed3"}
    assert sorted(read.loc[read["variant"] == "full", "sample"]) == [4, 8, 15]
    first = RunDir(run).results_samples("patches").read_bytes()
    write_rows(run, "patches", [row], pd.concat([values("full", [4, 8, 15]),
                                                 values("baseline:prior_mask", [4, 8, 15])]))
    assert RunDir(run).results_samples("patches").read_bytes() == first  # same values, same bytes
    write_rows(run, "patches", [row])  # re-run without per-sample values: none may outlive the rows
    assert not RunDir(run).results_samples("patches").exists()
    assert read_samples(tmp_path / "runs").empty


def test_sample_matrices_average_repeats_and_leave_missing_images_empty() -> None:
    frame = pd.concat([values("full", [1, 2], repeat=0), values("full", [1, 2], repeat=1, offset=0.5),
                       values("full", [1], offset=0.1)]).assign(seed=[0, 0, 0, 0, 1], protocol="patches")
    matrices = sample_matrices(frame, ["variant", "protocol", "condition", "metric", "extractor"])
    matrix = matrices[("full", "patches", "key", "mask_iou", "")]
    assert list(matrix.seeds) == [0, 1] and list(matrix.ids) == [1, 2]
    np.testing.assert_allclose(matrix.values[0], [0.26, 0.27])  # the two repeats averaged
    assert matrix.values[1, 0] == 0.11 and math.isnan(matrix.values[1, 1])
