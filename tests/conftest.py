"""Shared fixtures: real photos that ship with scikit-learn / scikit-image, and small folders."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Tests run offline and small (CI has 2 cores). An empty torch hub home and no weights variable
# make every test see the same thing on any machine: no Inception weights, and nothing to fetch.
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="kpbench-test-torch-home-")
os.environ.pop("KPBENCH_INCEPTION_WEIGHTS", None)
torch.set_num_threads(1)  # oversubscribed OpenMP threads stall badly on a busy 2-core machine


def _refuse_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("a test tried to download something")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to fetch weights from the network fails the test at once."""
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _refuse_network)


def real_photos() -> dict[str, np.ndarray]:
    """Name -> uint8 (H, W, 3) RGB photos bundled with scikit-learn and scikit-image."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    photos = {Path(name).stem: image for name, image in zip(bunch.filenames, bunch.images)}
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        photos[name] = getattr(skimage.data, name)()
    return photos


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return real_photos()


@pytest.fixture
def photo_folder(tmp_path: Path, photos: dict[str, np.ndarray]) -> Path:
    """A folder of real photos in two class sub-folders (jpg and png)."""
    root = tmp_path / "photos"
    for number, (name, image) in enumerate(sorted(photos.items())):
        label = "even" if number % 2 == 0 else "odd"
        (root / label).mkdir(parents=True, exist_ok=True)
        suffix = ".jpg" if number % 2 == 0 else ".png"
        Image.fromarray(image).save(root / label / f"{name}{suffix}")
    return root


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every registry as it is now, restored after the test (whatever it registered); plug-in
    files the test imported are forgotten and KPBENCH_PLUGINS is restored."""
    import kpbench.metricinfo as metricinfo
    import kpbench.plugins as plugins
    import kpbench.protocol as protocol_module
    import kpbench.variant as variant_module
    from kpbench.metricinfo import list_metrics
    from kpbench.protocol import list_protocols
    from kpbench.variant import list_variants

    # Restored afterwards, whatever the test sets (``--plugin`` appends to it). setenv first: a
    # delenv of an unset variable records nothing, and a value set later would outlive the test.
    monkeypatch.setenv(plugins.PLUGINS_ENV, "")
    monkeypatch.delenv(plugins.PLUGINS_ENV)
    list_variants(), list_protocols(), list_metrics()  # load the built-in ones first
    saved = (dict(variant_module._REGISTRY), dict(variant_module._ORDER), list(variant_module._REFERENCE),
             dict(protocol_module._REGISTRY), dict(metricinfo._REGISTRY))
    files = dict(plugins._FILE_MODULES)
    yield
    variants, order, reference, protocols, metrics = saved
    for registry, before in ((variant_module._REGISTRY, variants), (variant_module._ORDER, order),
                             (protocol_module._REGISTRY, protocols), (metricinfo._REGISTRY, metrics)):
        registry.clear()
        registry.update(before)
    variant_module._REFERENCE[:] = reference
    for path, name in list(plugins._FILE_MODULES.items()):
        if path not in files:
            sys.modules.pop(name, None)
    plugins._FILE_MODULES.clear()
    plugins._FILE_MODULES.update(files)
