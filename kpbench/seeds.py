"""The seeds kpbench accepts: one range for every seed a user gives (training, data split,
generation, export, study), checked where configs are built (:class:`kpbench.config.TrainConfig`,
:class:`kpbench.dataspec.DataSpec`) and where the command line reads them. Free of heavy imports:
configs load without torch. :func:`kpbench.runtime.seed_everything` and
:func:`kpbench.runtime.derive_seed` take every seed in the range."""

from __future__ import annotations

import numbers

from kpbench.errors import KpbenchError

SEED_MIN = 0
# The largest seed every consumer takes: torch.manual_seed takes [-2**63, 2**64), numpy's
# default_rng only non-negative integers, a TOML plan and pandas' int64 columns (the seed of
# result rows) at most 2**63 - 1. No sign: run folders are named -seed<k> and --seeds reads
# "0-2" as a range.
SEED_MAX = 2**63 - 1
SEED_RANGE_TEXT = f"{SEED_MIN} to 2**63 - 1"


def check_seed(value: object, what: str = "seed") -> int:
    """``value`` as an int when it is an integer in [SEED_MIN, SEED_MAX], else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise KpbenchError(f"{what} must be an integer from {SEED_RANGE_TEXT}, got {value!r}")
    if not SEED_MIN <= int(value) <= SEED_MAX:
        raise KpbenchError(f"{what} must be an integer from {SEED_RANGE_TEXT}, got {int(value)}")
    return int(value)
