"""What decides a run's data, without importing torch or OpenCV: :class:`DataSpec`, the patch
sources, and how a box file is named (:func:`box_file_id`). Reading a config or a plan needs only
this module; opening the data is :mod:`kpbench.samples`'."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from kpbench.choices import BoxFill, choice_values
from kpbench.choices import PatchSource as PatchSourceChoice
from kpbench.errors import KpbenchError
from kpbench.io import sha256_file
from kpbench.seeds import check_seed

FILL_CHOICES: tuple[str, ...] = choice_values(BoxFill)  # --fill: what to do with images short of N boxes
_ID_HASH_LENGTH = 16


def box_file_id(path: Path | str) -> str:
    """``<file stem>.<sha256 of the content, 16 hex digits>``: what names a box file in run
    identities and cache keys (its content, and a readable name)."""
    path = Path(path)
    if not path.is_file():
        raise KpbenchError(f"box file {path} not found")
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", path.stem) or "boxes"
    return f"{stem}.{sha256_file(path)[:_ID_HASH_LENGTH]}"



PatchSource = Literal["key", "random"]
PATCH_SOURCES: tuple[str, ...] = choice_values(PatchSourceChoice)


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides which samples a run sees; recorded in every run's config."""

    source: str = "builtin"
    size: int = 64
    preset: str = "default"
    crop: int | None = None
    split_seed: int = 0
    test_fraction: float = 0.1
    n_patches: int = 3
    edge_model: str | None = None
    # Key patches from a box file (kpbench.boxfile) instead of kpbench's EdgeBoxes (None, or
    # "edgeboxes"): its absolute path (where it was; not part of a run's identity) and
    # ``boxes_id``, its name and content hash (part of it), set from the file when not given.
    boxes: str | None = None
    boxes_id: str | None = None
    # Images with fewer than N boxes in the file: None (or "skip") leaves them out, "detect"
    # completes them with EdgeBoxes boxes. Only with a box file.
    box_fill: str | None = None

    def __post_init__(self) -> None:
        from kpbench.choices import EDGEBOXES

        check_seed(self.split_seed, "split seed")
        if self.boxes in (None, EDGEBOXES):
            for name in ("boxes", "boxes_id", "box_fill"):
                object.__setattr__(self, name, None)
            return
        if self.box_fill not in (None, *FILL_CHOICES):
            raise KpbenchError(f"unknown box fill {self.box_fill!r}; use {' or '.join(FILL_CHOICES)}")
        if self.box_fill == "skip":
            object.__setattr__(self, "box_fill", None)  # the default, stored as such
        if self.boxes_id is None:  # a new spec: name the file's content (a stored one keeps its own)
            path = Path(str(self.boxes)).expanduser().resolve()
            object.__setattr__(self, "boxes", str(path))
            object.__setattr__(self, "boxes_id", box_file_id(path))

    def with_boxes(self, boxes: str | None, box_fill: str | None = None) -> DataSpec:
        """This spec with another box source (a file, or None / "edgeboxes"), named afresh."""
        return replace(self, boxes=boxes, boxes_id=None, box_fill=box_fill)

    @property
    def box_source(self) -> str:
        """``edgeboxes``, or the box file's id (``<stem>.<content hash>``)."""
        from kpbench.choices import EDGEBOXES

        return self.boxes_id or EDGEBOXES
