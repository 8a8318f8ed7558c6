"""``python -m kpbench.launch CONFIG.json``: train one run from a saved TrainConfig.

What ``kpbench run`` starts under ``torchrun`` when a cell has several processes (one per GPU):
every process reads the same config and calls :func:`kpbench.train.train`, which joins the
process group torchrun describes. Exit codes as the CLI's: 2 for a user error, 130 when stopped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kpbench.errors import KpbenchError
from kpbench.train import TrainConfig, train


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m kpbench.launch CONFIG.json", file=sys.stderr)
        return 2
    try:
        train(TrainConfig.from_dict(json.loads(Path(argv[0]).read_text())))
    except KpbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
