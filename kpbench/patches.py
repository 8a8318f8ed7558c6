"""Key patches: EdgeBoxes proposals filtered to part-sized boxes, plus random patches, the mask
and the horizontal flip that keeps image, boxes, patches and mask consistent.

Detection (paper section 3.1): EdgeBoxes (OpenCV contrib ``ximgproc``) scores candidate boxes by
the edges they enclose; boxes of extreme area or aspect ratio are dropped, overlapping ones are
removed by greedy non-maximum suppression, and the top N by objectness are the key patches.

EdgeBoxes needs an edge map and an edge-normal orientation map. With a structured-forest model
file (OpenCV's ``model.yml.gz``) the forest gives both; otherwise Scharr gradients of a lightly
blurred image, thinned by non-maximum suppression along the gradient, stand in (unthinned
gradients are many times slower and favour whole-image boxes).

When fewer than N boxes pass the filters, the filters are relaxed step by step (see
:data:`RELAX_STEPS`); the last resort is a deterministic grid of valid-size boxes. The level
reached is recorded, so a detector never returns fewer than N boxes and never hides that it had
to relax.

Boxes are int (N, 4) arrays ``(x0, y0, x1, y1)`` in pixels, x1/y1 exclusive.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from kpbench.errors import KpbenchError
from kpbench.io import sha256_file

if TYPE_CHECKING:
    import torch

# torch is imported inside the tensor helpers below: detection worker processes never need it,
# and importing it would cost each of them over a second.

_Boxes = TypeVar("_Boxes", np.ndarray, "torch.Tensor")  # boxes as an array or a tensor, returned as the same

# Bump when detection changes in a way that changes boxes: it enters every cache key.
DETECTOR_VERSION = 1

# Gradient edges: a step of about 20 grey levels maps to a full-strength edge at most, so a
# nearly flat image is not stretched into strong edges by the per-image normalisation.
_MIN_EDGE_SCALE = 1.0


@dataclass(frozen=True)
class PatchParams:
    """Every knob of key-patch detection. Areas and heights are fractions of the image.

    ``max_aspect`` bounds max(w/h, h/w). The default 2.0 keeps part-like boxes (an eye pair, a
    wheel, a flower head) and drops slivers; the authors' CelebA boxes stay within 1.5.
    ``min_side``/``max_side`` bound both box sides as fractions of the image side (the ``celeba``
    preset uses them to match the authors' boxes); ``max_height`` caps the height alone (the
    paper's waterfall setting allows tall boxes up to 0.7 of the height).
    """

    n_patches: int = 3
    min_area: float = 0.05
    max_area: float = 0.25
    max_aspect: float = 2.0
    min_side: float = 0.0
    max_side: float = 1.0
    max_height: float | None = None
    nms_iou: float = 0.5
    edge_model: str | None = None  # structured-forest model.yml(.gz); None: gradient edges
    edge_blur: float = 1.0  # Gaussian sigma (px) before gradient edges
    alpha: float = 0.65  # EdgeBoxes sliding-window step (IoU between neighbouring windows)
    beta: float = 0.75  # EdgeBoxes' own NMS threshold among its proposals
    max_candidates: int = 1000  # EdgeBoxes proposals kept before our filters
    # Added later; at these defaults (OpenCV's own for EdgeBoxes, the image as given) they leave
    # the boxes and the cache key of every earlier setting unchanged (see cache_key).
    detect_size: int | None = None  # edges and proposals on the image resized to this shorter side
    edge_min_mag: float = 0.1  # EdgeBoxes: edge pixels weaker than this are ignored
    cluster_min_mag: float = 0.5  # EdgeBoxes: edge groups of less total magnitude are ignored
    gamma: float = 2.0  # EdgeBoxes: affinity sensitivity (higher: edge groups link less across bends)
    kappa: float = 1.5  # EdgeBoxes: scale sensitivity (higher: larger boxes score more)

    def __post_init__(self) -> None:
        problems = []
        if self.n_patches < 1:
            problems.append(f"n_patches must be >= 1, got {self.n_patches}")
        if not 0.0 < self.min_area < self.max_area <= 1.0:
            problems.append(f"need 0 < min_area < max_area <= 1, got {self.min_area}, {self.max_area}")
        if self.max_aspect < 1.0:
            problems.append(f"max_aspect must be >= 1, got {self.max_aspect}")
        if not 0.0 <= self.min_side < self.max_side <= 1.0:
            problems.append(f"need 0 <= min_side < max_side <= 1, got {self.min_side}, {self.max_side}")
        if self.max_height is not None and not 0.0 < self.max_height <= 1.0:
            problems.append(f"max_height must be in (0, 1], got {self.max_height}")
        if not 0.0 < self.nms_iou <= 1.0:
            problems.append(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.edge_blur < 0.0:
            problems.append(f"edge_blur must be >= 0, got {self.edge_blur}")
        if not (0.0 < self.alpha < 1.0 and 0.0 < self.beta <= 1.0):
            problems.append(f"EdgeBoxes alpha and beta must be in (0, 1), got {self.alpha}, {self.beta}")
        if self.max_candidates < 1:
            problems.append(f"max_candidates must be >= 1, got {self.max_candidates}")
        if self.detect_size is not None and self.detect_size < 16:
            problems.append(f"detect_size must be >= 16 px, got {self.detect_size}")
        if self.edge_min_mag < 0.0 or self.cluster_min_mag < 0.0 or self.gamma <= 0.0 or self.kappa <= 0.0:
            problems.append("EdgeBoxes needs edge_min_mag, cluster_min_mag >= 0 and gamma, kappa > 0, got "
                            f"{self.edge_min_mag}, {self.cluster_min_mag}, {self.gamma}, {self.kappa}")
        if problems:
            raise KpbenchError("bad patch parameters: " + "; ".join(problems))

    def cache_key(self) -> dict:
        """Every parameter that changes the boxes; the edge model by content, not by path."""
        key = dataclasses.asdict(self)
        for name, default in _LATER_FIELD_DEFAULTS.items():
            if key[name] == default:
                del key[name]  # caches made before the field existed stay valid
        key["edge_model"] = sha256_file(_checked_model_path(self.edge_model)) if self.edge_model else None
        key["detector_version"] = DETECTOR_VERSION
        return key


_LATER_FIELD_DEFAULTS = {name: getattr(PatchParams(), name) for name in
                         ("detect_size", "edge_min_mag", "cluster_min_mag", "gamma", "kappa")}


_CELEBA_V1 = PatchParams(min_area=0.06, max_area=0.16, max_aspect=1.5, min_side=0.25, max_side=0.4)
_CELEBA_V2 = dataclasses.replace(_CELEBA_V1, max_area=0.14, max_aspect=1.25, min_side=0.28, nms_iou=0.2,
                                 detect_size=128, edge_blur=2.5, alpha=0.85, beta=0.85, edge_min_mag=0.2,
                                 cluster_min_mag=1.5, gamma=3.0, kappa=1.0)

PATCH_PRESETS: dict[str, PatchParams] = {
    "default": PatchParams(),
    # The authors' CelebA boxes (128 px frame): sides 32-51 px, 6-16 % of the area, w/h 0.63-1.5.
    "celeba": _CELEBA_V1,
    # The same, under a name that keeps meaning these boxes if "celeba" moves on.
    "celeba-v1": _CELEBA_V1,
    # Tuned for agreement with the authors' CelebA boxes on CelebA-6k's training split
    # (benchmarks/boxes.py): proposals on a 128 px image (the paper's EdgeBoxes resolution).
    "celeba-v2": _CELEBA_V2,
    # Paper, waterfall dataset: tall boxes up to 70 % of the image height for long streams.
    "waterfall": PatchParams(max_aspect=3.0, max_height=0.7),
}


@dataclass(frozen=True)
class _FilterRule:
    """One rung of the relaxation ladder: which proposals are acceptable, and how much two
    chosen boxes may overlap."""

    min_area: float
    max_area: float
    max_aspect: float
    min_side: float
    max_side: float
    max_height: float
    nms_iou: float

    def accepts(self, boxes: npt.NDArray[np.int64], height: int, width: int) -> npt.NDArray[np.bool_]:
        """(K, 4) boxes -> (K,) bool."""
        box_w, box_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        rel_w, rel_h = box_w / width, box_h / height
        area = rel_w * rel_h
        aspect = np.maximum(box_w / box_h, box_h / box_w)
        shortest, longest = np.minimum(rel_w, rel_h), np.maximum(rel_w, rel_h)
        return (
            (area >= self.min_area) & (area <= self.max_area) & (aspect <= self.max_aspect)
            & (shortest >= self.min_side) & (longest <= self.max_side) & (rel_h <= self.max_height)
        )


# Relaxation ladder after the user's own filters (level 0). Each step widens every range by a
# factor (lower bounds divided, upper bounds multiplied, capped at the whole image) and may allow
# more overlap. Boxes chosen at a stricter level are kept; later levels only fill the remaining
# slots. After the last step come the grid boxes.
@dataclass(frozen=True)
class RelaxStep:
    widen: float
    nms_iou: float | None  # overlap allowed at this step (if above the user's); None: the user's


RELAX_STEPS: tuple[RelaxStep, ...] = (RelaxStep(widen=1.5, nms_iou=None), RelaxStep(widen=1.5, nms_iou=0.7))
GRID_RELAX_LEVEL = len(RELAX_STEPS) + 1  # relax_level of a detection that needed grid boxes


def _filter_rules(params: PatchParams) -> list[_FilterRule]:
    max_height = params.max_height if params.max_height is not None else 1.0
    rules = [_FilterRule(params.min_area, params.max_area, params.max_aspect, params.min_side,
                         params.max_side, max_height, params.nms_iou)]
    for step in RELAX_STEPS:
        rules.append(_FilterRule(
            min_area=params.min_area / step.widen,
            max_area=min(1.0, params.max_area * step.widen),
            max_aspect=params.max_aspect * step.widen,
            min_side=params.min_side / step.widen,
            max_side=min(1.0, params.max_side * step.widen),
            max_height=min(1.0, max_height * step.widen),
            nms_iou=max(params.nms_iou, step.nms_iou or 0.0),
        ))
    return rules


@dataclass(frozen=True)
class Detection:
    boxes: np.ndarray  # (N, 4) int32 x0, y0, x1, y1 (exclusive)
    scores: np.ndarray  # (N,) float32 EdgeBoxes objectness; 0 for grid boxes
    relax_level: int  # 0: user's filters; 1..len(RELAX_STEPS): relaxed; GRID_RELAX_LEVEL: grid


_MODEL_OPTIONS = ("stride", "shrinkNumber", "patchSize", "patchInnerSize", "numberOfGradientOrientations",
                  "gradientSmoothingRadius", "regFeatureSmoothingRadius", "ssFeatureSmoothingRadius",
                  "gradientNormalizationRadius", "selfsimilarityGridSize", "numberOfTrees",
                  "numberOfTreesToEvaluate")
_MODEL_POSITIVE = ("stride", "shrinkNumber", "patchSize", "patchInnerSize", "numberOfGradientOrientations",
                   "selfsimilarityGridSize", "numberOfTrees", "numberOfTreesToEvaluate")
_MODEL_FOREST = ("childs", "featureIds", "thresholds", "edgeBoundaries", "edgeBins")


def _checked_model_path(edge_model: str) -> Path:
    path = Path(edge_model).expanduser()
    if not path.is_file():
        raise KpbenchError(f"edge model file {path} not found")
    return path


def _load_edge_model(edge_model: str) -> cv2.ximgproc.StructuredEdgeDetection:
    """Load a structured-forest model, checking its structure first: OpenCV reads missing
    fields as 0 and then divides by them (the process dies with SIGFPE instead of raising)."""
    path = _checked_model_path(edge_model)
    storage = cv2.FileStorage()  # open() raises cv2.error; the constructor a SystemError
    try:
        if not storage.open(str(path), cv2.FILE_STORAGE_READ):
            raise KpbenchError(f"cannot open edge model {path}")
    except cv2.error as error:
        raise KpbenchError(f"edge model {path} is not an OpenCV model file ({error.err})") from error
    try:
        options = storage.getNode("options")
        missing = [name for name in _MODEL_OPTIONS if options.getNode(name).empty()]
        missing += [name for name in _MODEL_FOREST if storage.getNode(name).empty()]
        if missing:
            raise KpbenchError(f"edge model {path} lacks {', '.join(missing)}; "
                               "expected an OpenCV structured-forest model.yml.gz")
        nonpositive = [name for name in _MODEL_POSITIVE if options.getNode(name).real() <= 0]
        if nonpositive:
            raise KpbenchError(f"edge model {path} has non-positive {', '.join(nonpositive)}")
    finally:
        storage.release()
    try:
        return cv2.ximgproc.createStructuredEdgeDetection(str(path))
    except cv2.error as error:
        raise KpbenchError(f"cannot load edge model {path}: {error.err}") from error


class KeyPatchDetector:
    """EdgeBoxes key-patch detector. Loads the edge model once; not picklable (processes build
    their own from the params). Results do not depend on earlier calls or on thread counts."""

    def __init__(self, params: PatchParams) -> None:
        self.params = params
        self._rules = _filter_rules(params)
        loosest = self._rules[-1]
        # EdgeBoxes' own box-size limits must admit every box any relaxation level may accept;
        # minBoxArea scales with the image (its default, 1000 px, suits ~500 px photos).
        self._min_area_fraction = loosest.min_area
        self._max_aspect_ratio = loosest.max_aspect
        self._forest = _load_edge_model(params.edge_model) if params.edge_model else None
        self._pixel_grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    # -- edge maps ---------------------------------------------------------------------------
    @staticmethod
    def _forest_edges(forest: cv2.ximgproc.StructuredEdgeDetection,
                      image: npt.NDArray[np.uint8]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB -> thinned edge map (H, W) in [0, 1] and normal orientation (H, W)."""
        edges = forest.detectEdges(image.astype(np.float32) / 255.0)
        orientation = forest.computeOrientation(edges)
        # edgesNms(E, O, dst, r, s, m, isParallel): dst is third, so the rest goes by keyword.
        thin = forest.edgesNms(edges, orientation, r=2, s=0, m=1.0, isParallel=False)
        return thin, orientation

    def _gradient_edges(self, image: npt.NDArray[np.uint8]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB -> thinned Scharr edges (H, W) in [0, 1] and normal orientation in [0, pi)."""
        gray: np.ndarray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        if self.params.edge_blur > 0:
            gray = cv2.GaussianBlur(gray, (0, 0), self.params.edge_blur)
        grad_x = cv2.Scharr(gray, cv2.CV_32F, 1, 0)
        grad_y = cv2.Scharr(gray, cv2.CV_32F, 0, 1)
        magnitude, angle = cv2.cartToPolar(grad_x, grad_y)
        # EdgeBoxes wants the edge normal modulo pi, as StructuredEdgeDetection.computeOrientation gives.
        orientation = np.mod(angle, np.pi).astype(np.float32)

        # Non-maximum suppression: keep a pixel only if it is no weaker than its two neighbours
        # one pixel away along the normal (bilinearly sampled).
        height, width = magnitude.shape
        if (height, width) not in self._pixel_grids:
            rows, cols = np.indices((height, width), dtype=np.float32)
            self._pixel_grids[(height, width)] = (cols, rows)
        cols, rows = self._pixel_grids[(height, width)]
        step_x, step_y = np.cos(orientation), np.sin(orientation)
        keep = np.ones(magnitude.shape, dtype=bool)
        for sign in (-1.0, 1.0):
            neighbour = cv2.remap(magnitude, cols + sign * step_x, rows + sign * step_y,
                                  cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            keep &= magnitude >= neighbour
        thin = np.where(keep, magnitude, 0.0).astype(np.float32)

        # Per-image contrast normalisation to the [0, 1] range EdgeBoxes' thresholds assume.
        strong = thin[thin > 0]
        scale = max(float(np.percentile(strong, 99)) if strong.size else 0.0, _MIN_EDGE_SCALE)
        return np.minimum(thin / scale, 1.0), orientation

    def _proposals(
        self, image: npt.NDArray[np.uint8],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(K, 4) int xyxy boxes inside the image, best first, and (K,) float32 scores."""
        height, width = image.shape[:2]
        # detect_size: the shorter side the proposals are computed at; boxes come back scaled.
        scale = self.params.detect_size / min(height, width) if self.params.detect_size else 1.0
        if scale != 1.0:
            resample = cv2.INTER_CUBIC if scale > 1.0 else cv2.INTER_AREA  # area: no aliasing when shrinking
            image = np.asarray(cv2.resize(image, (round(width * scale), round(height * scale)),
                                          interpolation=resample), dtype=np.uint8)
        if self._forest is not None:
            edges, orientation = self._forest_edges(self._forest, image)
        else:
            edges, orientation = self._gradient_edges(image)
        # A fresh EdgeBoxes object per image (~0.1 ms): a reused one carries state over from the
        # previous image and returns different boxes and scores for the same input.
        edge_boxes = cv2.ximgproc.createEdgeBoxes(
            alpha=self.params.alpha, beta=self.params.beta, maxBoxes=self.params.max_candidates,
            maxAspectRatio=self._max_aspect_ratio,
            minBoxArea=max(1.0, self._min_area_fraction * image.shape[0] * image.shape[1]),
            edgeMinMag=self.params.edge_min_mag, clusterMinMag=self.params.cluster_min_mag,
            gamma=self.params.gamma, kappa=self.params.kappa)
        rects, raw_scores = edge_boxes.getBoundingBoxes(edges, orientation)
        if len(rects) == 0:
            return np.zeros((0, 4), np.int64), np.zeros(0, np.float32)
        rects_xywh = np.asarray(rects, dtype=np.int64).reshape(-1, 4)
        scores = np.asarray(raw_scores, dtype=np.float32).reshape(-1)
        corners = np.concatenate([rects_xywh[:, :2], rects_xywh[:, :2] + rects_xywh[:, 2:]], axis=1)
        if scale != 1.0:
            corners = np.round(corners / scale).astype(np.int64)  # back to the given image's pixels
        x0 = np.clip(corners[:, 0], 0, width - 1)
        y0 = np.clip(corners[:, 1], 0, height - 1)
        boxes = np.stack([x0, y0, np.clip(corners[:, 2], x0 + 1, width),
                          np.clip(corners[:, 3], y0 + 1, height)], axis=1)
        order = np.argsort(-scores, kind="stable")
        return boxes[order], scores[order]

    # -- selection ---------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> Detection:
        """uint8 (H, W, 3) RGB -> exactly ``n_patches`` boxes inside the image."""
        return self.detect_counts(image, [self.params.n_patches])[0]

    def detect_counts(self, image: np.ndarray, counts: list[int]) -> list[Detection]:
        """What :meth:`detect` gives with ``n_patches`` set to each of ``counts``, from one set of
        EdgeBoxes proposals (the same filters; only the selection of the top N differs)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image)
        boxes, scores = self._proposals(image)
        return [self._select(boxes, scores, count, *image.shape[:2]) for count in counts]

    def _select(self, boxes: np.ndarray, scores: np.ndarray, count: int, height: int,
                width: int) -> Detection:
        """The top ``count`` proposals under the filters, relaxing them (then grid boxes) as needed."""
        chosen: list[int] = []
        for level, rule in enumerate(self._rules):
            _greedy_fill(boxes, rule.accepts(boxes, height, width), chosen, count, rule.nms_iou)
            if len(chosen) == count:
                return Detection(boxes[chosen].astype(np.int32), scores[chosen], level)

        grid = _grid_boxes(dataclasses.replace(self.params, n_patches=count), height, width)
        grid = grid[_least_overlapping(grid, boxes[chosen], count - len(chosen))]
        return Detection(
            np.concatenate([boxes[chosen], grid]).astype(np.int32),
            np.concatenate([scores[chosen], np.zeros(len(grid), np.float32)]),
            GRID_RELAX_LEVEL,
        )


def box_iou(box: npt.NDArray[np.integer], boxes: npt.NDArray[np.integer]) -> npt.NDArray[np.float64]:
    """IoU of one (4,) box with each of (K, 4) boxes -> (K,)."""
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou: npt.NDArray[np.float64] = inter / np.maximum(area + areas - inter, 1)  # numpy's ufunc stubs give Any
    return iou


def _greedy_fill(boxes: np.ndarray, allowed: np.ndarray, chosen: list[int], count: int,
                 max_iou: float) -> None:
    """Greedy NMS over score-sorted ``boxes``, appending to ``chosen`` until it holds ``count``.
    Boxes already chosen (at a stricter level) suppress their neighbours too."""
    allowed = allowed.copy()
    for index in chosen:
        allowed &= box_iou(boxes[index], boxes) <= max_iou
    allowed[chosen] = False
    while len(chosen) < count and allowed.any():
        best = int(np.argmax(allowed))  # first allowed index = highest remaining score
        chosen.append(best)
        allowed &= box_iou(boxes[best], boxes) <= max_iou
        allowed[best] = False


def _grid_boxes(params: PatchParams, height: int, width: int) -> np.ndarray:
    """(g*g, 4) disjoint boxes, one centred in each cell of a g x g grid (g*g >= N): squares of
    the geometric-mean valid area, clipped to the side limits and the cell."""
    cells = math.ceil(math.sqrt(params.n_patches))
    cell_h, cell_w = height // cells, width // cells
    side = math.sqrt(math.sqrt(params.min_area * params.max_area) * height * width)
    side = min(max(side, params.min_side * min(height, width)), params.max_side * min(height, width))
    max_h = params.max_height * height if params.max_height is not None else height
    box_h = max(1, min(round(side), cell_h, math.floor(max_h)))
    box_w = max(1, min(round(side), cell_w))
    rows, cols = np.divmod(np.arange(cells * cells), cells)
    y0 = rows * cell_h + (cell_h - box_h) // 2
    x0 = cols * cell_w + (cell_w - box_w) // 2
    return np.stack([x0, y0, x0 + box_w, y0 + box_h], axis=1).astype(np.int64)


def _least_overlapping(candidates: np.ndarray, taken: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` candidates overlapping ``taken`` least (ties: grid order)."""
    if len(taken) == 0:
        return np.arange(count)
    worst = np.max([box_iou(box, candidates) for box in taken], axis=0)
    return np.argsort(worst, kind="stable")[:count]


def random_boxes(rng: np.random.Generator, size: int, n: int, reference_wh: np.ndarray) -> np.ndarray:
    """(n, 4) int32 random patches with key patches' count and size distribution.

    Each box's (w, h) is drawn from ``reference_wh`` (M, 2), the pool of key-box sizes, and its
    position uniformly among the positions that keep it inside the ``size`` x ``size`` image.
    """
    reference_wh = np.asarray(reference_wh).reshape(-1, 2)
    if len(reference_wh) == 0:
        raise ValueError("reference_wh is empty: no key-box sizes to sample from")
    sizes = np.clip(reference_wh[rng.integers(0, len(reference_wh), size=n)], 1, size).astype(np.int64)
    x0 = rng.integers(0, size - sizes[:, 0] + 1)
    y0 = rng.integers(0, size - sizes[:, 1] + 1)
    return np.stack([x0, y0, x0 + sizes[:, 0], y0 + sizes[:, 1]], axis=1).astype(np.int32)


def crop_patches(image: torch.Tensor, boxes: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(3, S, S) image, (N, 4) boxes -> (N, 3, S, S) patches; see :func:`cut_patches`."""
    import torch

    boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.int64).reshape(1, -1, 4)
    return cut_patches(image[None], boxes)[0]


def cut_patches(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) images, (B, N, 4) int boxes -> (B, N, 3, S, S) patches, on the images' device.

    Each box is resized to S x S bilinearly, as ``F.interpolate(align_corners=False)`` resizes
    the cropped box (equal up to float rounding): one ``grid_sample`` call for the whole batch,
    with sample positions clamped to the box's own pixels, so no pixel outside a box leaks in
    (``roi_align`` would blend its border with the neighbouring pixels). The result is the mean of
    that and the mirror of the mirrored image's patches, which makes
    ``cut_patches(flip(images), flip_boxes(boxes))`` equal ``flip(cut_patches(images, boxes))``
    bit for bit (one pass alone differs from it by an ulp).
    """
    size = images.shape[-1]
    boxes = boxes.to(images.device)
    direct = _sample_boxes(images, boxes)
    mirrored = _sample_boxes(images.flip(-1), flip_boxes(boxes, size)).flip(-1)
    return 0.5 * (direct + mirrored)


def _sample_boxes(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """One bilinear pass of :func:`cut_patches`: (B, 3, S, S), (B, N, 4) -> (B, N, 3, S, S)."""
    import torch
    import torch.nn.functional as F

    batch, n = boxes.shape[:2]
    height, width = images.shape[-2:]
    steps = torch.arange(width, device=images.device, dtype=torch.float32) + 0.5  # (S,) output centres
    corner = boxes[..., :2].float()  # (B, N, 2) x0, y0
    extent = (boxes[..., 2:] - boxes[..., :2]).float()  # (B, N, 2) w, h
    # Source pixel coordinate of each output pixel, per axis: (B, N, S); align_corners=False.
    offsets = steps * (extent[..., None] / width) - 0.5  # (B, N, 2, S)
    offsets = torch.minimum(offsets.clamp(min=0.0), extent[..., None] - 1.0)
    source = corner[..., None] + offsets  # (B, N, 2, S) pixel coordinates
    scale = torch.tensor([width, height], device=images.device, dtype=torch.float32)
    normalised = (2.0 * source + 1.0) / scale[:, None] - 1.0  # grid_sample's [-1, 1] pixel centres
    grid_x = normalised[:, :, 0, None, :].expand(batch, n, height, width)
    grid_y = normalised[:, :, 1, :, None].expand(batch, n, height, width)
    grid = torch.stack([grid_x, grid_y], dim=-1).reshape(batch, n * height, width, 2)
    sampled = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                            align_corners=False)  # (B, 3, N * S, S)
    return sampled.reshape(batch, -1, n, height, width).transpose(1, 2)


def boxes_to_mask(boxes: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(..., N, 4) boxes -> (..., 1, size, size) float32 mask, 1 inside the union of the boxes."""
    import torch

    box_tensor = torch.as_tensor(np.asarray(boxes) if not isinstance(boxes, torch.Tensor) else boxes,
                                 dtype=torch.int64)
    coords = torch.arange(size, device=box_tensor.device)
    inside_x = (coords >= box_tensor[..., 0:1]) & (coords < box_tensor[..., 2:3])  # (..., N, S)
    inside_y = (coords >= box_tensor[..., 1:2]) & (coords < box_tensor[..., 3:4])  # (..., N, S)
    union = (inside_y[..., :, None] & inside_x[..., None, :]).any(dim=-3)  # (..., S, S)
    return union.unsqueeze(-3).to(torch.float32)


def flip_boxes(boxes: _Boxes, size: int) -> _Boxes:
    """Horizontal flip of (..., 4) boxes in a ``size``-wide image: x0' = size - x1, x1' = size - x0."""
    flipped = boxes[..., [2, 1, 0, 3]]  # a copy, for numpy and torch alike
    flipped[..., 0::2] = size - flipped[..., 0::2]
    return flipped
