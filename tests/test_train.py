"""Variants, losses and the training loop: each variant's objective, overfitting, resume, stops, DDP."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import kpbench.train as train_module
from kpbench import variant as variant_module
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.losses import generator_loss, lambda_at, make_fakes
from kpbench.nets import GeneratorOutput, build_networks
from kpbench.paths import RunDir, WorkDir
from kpbench.resume import run_dir_for
from kpbench.runs import load_run
from kpbench.samples import make_sample_dataset
from kpbench.train import Batch, TrainConfig, Trainer, resolve_spec, train
from kpbench.variant import EQUATION_4_FAKES, get_variant, list_variants, reference_name, spec_diff

REPO = Path(__file__).resolve().parents[1]
DATA = DataSpec(source="builtin:64")  # 58 training images
VARIANTS = [spec.name for spec in list_variants()]  # every registered variant, in display order

# The components and objective each variant must have.
EXPECTED = {
    "full": {"discriminator": "image", "fakes": set(EQUATION_4_FAKES), "mask": True,
             "terms": {"adversarial", "spatial", "appearance"}},
    "naive_gan": {"discriminator": "image", "fakes": {"generated"}, "mask": True,
                  "terms": {"adversarial", "spatial", "appearance"}},
    "nomask": {"discriminator": "image", "fakes": set(EQUATION_4_FAKES), "mask": False,
               "terms": {"adversarial", "appearance"}},
    "autoencoder": {"discriminator": "none", "fakes": set(), "mask": True,
                    "terms": {"spatial", "appearance", "reconstruction"}},
    "cgan": {"discriminator": "conditional", "fakes": {"generated"}, "mask": False,
             "terms": {"adversarial", "reconstruction"}},
    # The architecture ablations of the paper's Fig. 4 and 5 keep the full model's objective.
    **{name: {"discriminator": "image", "fakes": set(EQUATION_4_FAKES), "mask": True,
              "terms": {"adversarial", "spatial", "appearance"}}
       for name in ("depth_concat", "siamese_concat", "independent_masks", "noskip")},
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The CI machine's 2 cores are shared: two OpenMP threads stall each other there.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def box_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("boxes")
    make_sample_dataset(DATA, "train", 0, WorkDir.resolve(root))  # detects and caches the boxes once
    return root / "cache"


@pytest.fixture
def workdir(tmp_path: Path, box_cache: Path) -> Path:
    shutil.copytree(box_cache, tmp_path / "cache")
    return tmp_path


def make_config(workdir: Path, **changes: Any) -> TrainConfig:
    base = TrainConfig(data=DATA, width=0.125, batch_size=4, steps=2, num_workers=0, progress=False,
                       workdir=str(workdir), sample_every=1000, checkpoint_every=1000, log_every=1)
    return replace(base, **changes)


def run_path(config: TrainConfig) -> Path:
    """Where ``train(config)`` keeps its run (the name shows the non-default settings)."""
    return run_dir_for(config, resolve_spec(config))


def fixed_batch(workdir: Path, n: int = 4) -> Batch:
    dataset = make_sample_dataset(DATA, "train", 0, WorkDir.resolve(workdir))
    items = [dataset[i] for i in range(n)]
    patches, real, mask = (torch.stack([item[k] for item in items]) for k in ("patches", "image", "mask"))
    generator = torch.Generator().manual_seed(0)
    return Batch(patches, real, mask, torch.rand(n, 128, generator=generator) * 2 - 1, real.roll(1, 0))


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in RunDir(run_dir).log.read_text().splitlines()]


def checkpoint(run_dir: Path) -> dict[str, Any]:
    return RunDir(run_dir).read_checkpoint()


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Bit-for-bit equality of nested checkpoint contents."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"differs at {path}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{k}]")
    else:
        assert a == b, f"differs at {path}: {a} != {b}"


# --- variants ------------------------------------------------------------------------------------


def test_registry_lists_variants_and_names_the_known_ones_on_error() -> None:
    # Every file in variants/ registers the variant it is named after; none is listed by hand.
    files = {path.stem for path in (REPO / "variants").glob("*.py") if not path.name.startswith("_")}
    assert set(VARIANTS) == files
    # The display order: the reference (full) model, the objective ablations, then the architecture ones.
    assert VARIANTS[0] == reference_name() == "full"
    assert VARIANTS == ["full", "naive_gan", "nomask", "autoencoder", "cgan",
                        "depth_concat", "siamese_concat", "independent_masks", "noskip"]
    with pytest.raises(KpbenchError, match="known variants: full, naive_gan, nomask, autoencoder, cgan, "
                       "depth_concat"):
        get_variant("no-such-variant")


def test_ablations_read_as_diffs_against_full() -> None:
    full = get_variant("full")
    assert spec_diff(full, full) == {}
    assert spec_diff(get_variant("naive_gan"), full) == {"fake_kinds": (EQUATION_4_FAKES, ("generated",))}
    assert set(spec_diff(get_variant("nomask"), full)) == {
        "mask_decoder", "spatial_weight", "appearance_mask"}
    assert set(spec_diff(get_variant("autoencoder"), full)) == {
        "discriminator", "fake_kinds", "adversarial_weight", "reconstruction_weight"}
    # The architecture ablations change the architecture alone.
    assert spec_diff(get_variant("depth_concat"), full) == {"encoder_fusion": ("sum", "concat")}
    assert spec_diff(get_variant("siamese_concat"), full) == {"encoder_fusion": ("sum", "siamese_concat")}
    assert spec_diff(get_variant("independent_masks"), full) == {"encoder_fusion": ("sum", "independent")}
    assert spec_diff(get_variant("noskip"), full) == {"image_skips": (True, False)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_variant_components_and_loss_terms_match_the_design(name: str, workdir: Path) -> None:
    spec, expected = get_variant(name), EXPECTED[name]
    assert spec.discriminator == expected["discriminator"]
    assert set(spec.fake_kinds) == expected["fakes"]
    assert set(spec.generator_terms) == expected["terms"]
    torch.manual_seed(0)
    nets = build_networks(spec, 64, 0.125, 3)
    assert (nets.generator.mask_decoder is not None) == expected["mask"]
    assert (nets.discriminator is None) == (expected["discriminator"] == "none")

    # Run one iteration and watch what the networks see.
    d_inputs: list[int] = []  # channels of every discriminator input
    g_calls: list[int] = []
    if nets.discriminator is not None:
        nets.discriminator.body.register_forward_hook(lambda m, args, out: d_inputs.append(args[0].shape[1]))
    nets.generator.register_forward_hook(lambda m, args, out: g_calls.append(1))
    trainer = Trainer(spec, nets.generator, nets.discriminator, TrainConfig(width=0.125), torch.device("cpu"))
    logged = trainer.iteration(fixed_batch(workdir), lam=0.64)

    n_fakes = len(expected["fakes"])
    d_keys = {k for k in logged if k.startswith("d/")}
    expected_d_keys = {"d/real", "d/total"} | {f"d/{kind}" for kind in expected["fakes"]}
    assert d_keys == (expected_d_keys if n_fakes else set())
    assert {k for k in logged if k.startswith("g/")} == {"g/total"} | {f"g/{t}" for t in expected["terms"]}
    # D step: real + one batch per fake kind; then one scoring of G_I(x) per G step.
    assert len(d_inputs) == (1 + n_fakes + 2 if n_fakes else 0)
    assert set(d_inputs) <= {3 + 9 if expected["discriminator"] == "conditional" else 3}
    # Two G updates, two generator forwards: the D step's forward serves the first G update.
    assert len(g_calls) == 2


def test_discriminator_fakes_follow_equation_4() -> None:
    g, y, y2 = torch.full((1, 3, 4, 4), 0.5), torch.full((1, 3, 4, 4), -0.5), torch.full((1, 3, 4, 4), 0.25)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1  # top half inside M
    fakes = make_fakes(EQUATION_4_FAKES, g, y, mask, y2)
    inside, outside = (slice(None), slice(None), slice(0, 2)), (slice(None), slice(None), slice(2, 4))
    expect = {"generated": (g, g), "generated_in_mask": (g, y), "generated_outside_mask": (y, g),
              "other_in_mask": (y2, y), "other_outside_mask": (y, y2)}
    for kind, (want_in, want_out) in expect.items():
        torch.testing.assert_close(fakes[kind][inside], want_in[inside])
        torch.testing.assert_close(fakes[kind][outside], want_out[outside])


def test_nomask_appearance_uses_the_true_mask() -> None:
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    real = torch.rand(2, 3, 8, 8) * 2 - 1
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    out = GeneratorOutput(image=image, mask=None, features=[])
    _, terms = generator_loss(get_variant("nomask"), out, real, mask, lam=1.0, fake_logits=torch.zeros(2))
    expected = ((image * mask - real * mask).abs().flatten(1).sum(1)).mean()
    torch.testing.assert_close(terms["appearance"], expected)
    assert "spatial" not in terms


def test_lambda_decays_geometrically_per_epoch_then_holds() -> None:
    values = [lambda_at(e, 0.64, 0.0064, 5) for e in range(7)]
    assert values[0] == pytest.approx(0.64) and values[4] == pytest.approx(0.0064)
    ratios = [b / a for a, b in zip(values[:4], values[1:5])]
    assert ratios == pytest.approx([0.01 ** 0.25] * 4)
    assert values[5] == values[6] == pytest.approx(0.0064)


# --- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_overfits_one_batch(name: str, workdir: Path) -> None:
    spec = get_variant(name)
    # The mask loss where there is one, else whole-image reconstruction, else appearance.
    tracked = next(t for t in ("spatial", "reconstruction", "appearance") if t in spec.generator_terms)
    torch.manual_seed(0)
    nets = build_networks(spec, 64, 0.125, 3)
    trainer = Trainer(spec, nets.generator, nets.discriminator, TrainConfig(width=0.125, lr=2e-3),
                      torch.device("cpu"))
    batch = fixed_batch(workdir)
    history = [trainer.iteration(batch, lam=0.64)[f"g/{tracked}"].item() for _ in range(30)]
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < 0.5 * history[0], f"{name}: {tracked} {history[0]:.0f} -> {history[-1]:.0f}"


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_trains_and_loads_for_evaluation(name: str, workdir: Path) -> None:
    run_dir = train(make_config(workdir, variant=name, steps=2, sample_every=2))
    assert run_dir == workdir / "runs" / f"{name}-builtin64-w0.125-b4-seed0"
    assert json.loads((run_dir / "spec.json").read_text())["name"] == name
    assert json.loads((run_dir / "config.json").read_text())["config"]["variant"] == name
    log = read_log(run_dir)
    assert [e["step"] for e in log if "losses" in e] == [1, 2] and log[-1]["event"] == "done"
    assert {"data_s", "step_s", "images_per_s", "lambda"} <= set(log[1])
    assert (run_dir / "samples" / "step-000002.png").stat().st_size > 0
    assert checkpoint(run_dir)["step"] == 2

    run = load_run(run_dir)
    assert run.spec == get_variant(name) and run.config.width == 0.125 and run.step == 2
    patches = torch.rand(2, 3, 3, 64, 64) * 2 - 1
    image, mask = run.generate(patches)
    assert image.shape == (2, 3, 64, 64)
    assert (mask is not None) == EXPECTED[name]["mask"]
    assert run.encode(patches).shape == (2, run.feature_dim)
    assert run.supports_variable_n == (name not in ("cgan", "depth_concat", "siamese_concat"))
    if run.supports_variable_n:
        assert run.encode(patches[:, :1]).shape == (2, run.feature_dim)
    else:
        with pytest.raises(KpbenchError, match="exactly 3 patches"):
            run.generate(patches[:, :2])
    baseline = run.untrained(seed=0)
    assert baseline.step == 0
    assert not torch.allclose(baseline.encode(patches), run.encode(patches))


def test_load_run_without_a_run_names_the_train_command(tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match=r"kpbench train --variant nomask --seed 3"):
        load_run(tmp_path / "runs" / "nomask-seed3")


def test_other_real_comes_from_the_previous_batch(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording_make_fakes(kinds: Any, generated: Any, real: torch.Tensor, mask: Any,
                             other_real: torch.Tensor) -> Any:
        seen.append((real.clone(), other_real.clone()))
        return make_fakes(kinds, generated, real, mask, other_real)

    monkeypatch.setattr(train_module, "make_fakes", recording_make_fakes)
    train(make_config(workdir, steps=3))
    assert len(seen) == 3
    for (previous, _), (real, other) in zip(seen, seen[1:]):
        assert torch.equal(other, previous)
        assert not any(torch.equal(o, r) for o in other for r in real)  # outside the mini-batch


def test_resume_is_bit_exact(workdir: Path, tmp_path_factory: pytest.TempPathFactory,
                             box_cache: Path) -> None:
    # Batch 8: 7 steps per epoch, so 10 steps cross an epoch boundary and a lambda change.
    base = make_config(workdir, batch_size=8, lambda_decay_epochs=3, checkpoint_every=3)
    straight = train(replace(base, steps=10))

    other = tmp_path_factory.mktemp("resumed")
    shutil.copytree(box_cache, other / "cache")
    first = train(replace(base, steps=5, workdir=str(other)))
    assert checkpoint(first)["step"] == 5
    resumed = train(replace(base, steps=10, workdir=str(other), num_workers=1))  # workers change nothing
    assert_same(checkpoint(straight), checkpoint(resumed))
    lifecycle = [e["event"] for e in read_log(resumed) if e.get("event") not in (None, "diagnostics")]
    assert lifecycle == ["start", "done", "resume", "done"]


def test_interrupted_run_saves_and_resumes(workdir: Path) -> None:
    config = make_config(workdir, steps=100_000, checkpoint_every=100_000)
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config.to_dict()))
    script = textwrap.dedent(f"""
        import json, sys
        from kpbench.train import TrainConfig, TrainingInterrupted, train
        config = TrainConfig.from_dict(json.loads(open({str(config_path)!r}).read()))
        try:
            train(config)
        except TrainingInterrupted as error:
            print(error)
            sys.exit(error.exit_code)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    log_path = RunDir(run_path(TrainConfig.from_dict(json.loads(config_path.read_text())))).log
    deadline = time.monotonic() + 120
    def steps_logged() -> int:
        return sum("losses" in line for line in log_path.read_text().splitlines()) if log_path.exists() else 0

    while steps_logged() < 2:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted at step" in stdout

    run_dir = log_path.parent
    stopped_at = checkpoint(run_dir)["step"]
    assert stopped_at >= 2
    train(replace(config, steps=stopped_at + 2))
    assert checkpoint(run_dir)["step"] == stopped_at + 2
    log = read_log(run_dir)
    lifecycle = [e["event"] for e in log if e.get("event") not in (None, "diagnostics")]
    assert lifecycle == ["start", "interrupted", "resume", "done"]
    assert [e["step"] for e in log if "losses" in e] == list(range(1, stopped_at + 3))


def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_run_resumes_once_space_is_freed(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(workdir, steps=3, checkpoint_every=2)
    run_dir, replace_file = run_path(config), os.replace
    saved: list[int] = []

    def disk_full_after_the_first_checkpoint(source: str, target: Any) -> None:
        if Path(target) == RunDir(run_dir).checkpoint:
            if saved:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            saved.append(1)
        replace_file(source, target)

    monkeypatch.setattr(os, "replace", disk_full_after_the_first_checkpoint)
    with pytest.raises(KpbenchError, match=rf"^cannot write {re.escape(str(RunDir(run_dir).checkpoint))}: no "
                       r"space left on device \(needs [0-9.]+ MB, [0-9.]+ MB free\)"):
        train(config)
    assert checkpoint(run_dir)["step"] == 2  # the step-2 checkpoint survived
    monkeypatch.setattr(os, "replace", replace_file)  # space freed
    train(config)
    assert checkpoint(run_dir)["step"] == 3


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(workdir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = train(make_config(workdir, steps=3, checkpoint_every=2))
    saved = RunDir(run_dir).checkpoint.read_bytes()

    class Poisoned(torch.utils.data.Dataset):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def __len__(self) -> int:
            return len(self.inner)

        def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
            return {**self.inner.raw_batch(positions), "poisoned": torch.ones(1)}

    def expand_poisoned(raw: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        batch = real_expand(raw, device)
        if "poisoned" in raw:  # training batches only, not the fixed sample and diagnostic inputs
            batch["image"] = torch.full_like(batch["image"], float("nan"))
        return batch

    real_factory, real_expand = train_module.make_sample_dataset, train_module.expand_batch
    monkeypatch.setattr(train_module, "make_sample_dataset", lambda *a, **k: Poisoned(real_factory(*a, **k)))
    monkeypatch.setattr(train_module, "expand_batch", expand_poisoned)
    with pytest.raises(KpbenchError, match=r"non-finite loss .* at step 4.*last good checkpoint \(step 3\)"):
        train(make_config(workdir, steps=6))
    assert RunDir(run_dir).checkpoint.read_bytes() == saved
    assert checkpoint(run_dir)["step"] == 3
    assert read_log(run_dir)[-1]["event"] == "non-finite"


def test_changed_settings_make_another_run_and_a_changed_variant_is_refused_unless_restart(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = train(make_config(workdir))
    # What a run learns from is part of its name: other settings are other runs, side by side.
    wider = train(make_config(workdir, width=0.25))
    faster = train(make_config(workdir, lr=1e-3))  # no tag of its own: a hash of the rest
    assert wider.name == "full-builtin64-w0.25-b4-seed0"
    assert re.fullmatch(r"full-builtin64-w0\.125-b4-x[0-9a-f]{6}-seed0", faster.name)
    assert len({run_dir, wider, faster}) == 3 and checkpoint(run_dir)["step"] == 2
    # Naming the variant's own initialisation explicitly is the same run.
    assert train(make_config(workdir, init=get_variant("full").init)) == run_dir
    with monkeypatch.context() as patch:
        patch.setitem(variant_module._REGISTRY, "full", replace(get_variant("full"), lambda_end=0.01))
        with pytest.raises(KpbenchError, match=r"spec\.lambda_end: 0\.0064 -> 0\.01.*--restart"):
            train(make_config(workdir))
    # Length and execution settings may change: the run continues.
    train(make_config(workdir, steps=3, num_workers=1, log_every=5))
    assert checkpoint(run_dir)["step"] == 3
    with monkeypatch.context() as patch:
        patch.setitem(variant_module._REGISTRY, "full", replace(get_variant("full"), lambda_end=0.01))
        assert train(make_config(workdir, restart=True)) == run_dir
    assert read_log(run_dir)[0]["event"] == "start"
    assert len([e for e in read_log(run_dir) if e.get("event") != "diagnostics"]) == 4
    assert json.loads((run_dir / "spec.json").read_text())["lambda_end"] == 0.01


def test_ddp_with_gloo_on_two_processes(workdir: Path) -> None:
    config = make_config(workdir, batch_size=8, steps=2, device="cpu")
    config_path, report = workdir / "config.json", workdir / "ranks.json"
    config_path.write_text(json.dumps(config.to_dict()))
    # Each rank reports a digest of its final weights, to check that the ranks stayed in sync.
    script = workdir / "ddp_train.py"
    script.write_text(textwrap.dedent(f"""
        import json
        import torch, torch.distributed as dist
        import kpbench.train as T

        original_run = T.TrainingSession.run

        def run_and_report(self):
            path = original_run(self)
            modules = [self.trainer.raw_generator, self.trainer.discriminator]
            weights = torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])
            gathered = [torch.empty_like(weights) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, weights)
            if dist.get_rank() == 0:
                others = self.other_real
                with open({str(report)!r}, "w") as handle:
                    json.dump({{"max_diff": (gathered[0] - gathered[1]).abs().max().item(),
                               "world": dist.get_world_size(), "per_rank_batch": others.shape[0]}}, handle)
            return path

        T.TrainingSession.run = run_and_report
        T.train(T.TrainConfig.from_dict(json.load(open({str(config_path)!r}))))
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(script)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = json.loads(report.read_text())
    assert ranks == {"max_diff": 0.0, "world": 2, "per_rank_batch": 4}
    run_dir = run_path(config)
    saved = checkpoint(run_dir)
    assert saved["step"] == 2 and len(saved["ranks"]) == 2
    # The two ranks saw different halves of each batch, and both RNG states were kept.
    assert not torch.equal(saved["ranks"][0]["other_real"], saved["ranks"][1]["other_real"])
    assert not torch.equal(saved["ranks"][0]["rng"]["z"], saved["ranks"][1]["rng"]["z"])
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2


# --- initialisation and diagnostics ----------------------------------------------------------


def test_default_initialisation_is_pytorchs_and_dcgan_is_selectable(workdir: Path) -> None:
    from torch import nn

    spec = get_variant("full")
    assert spec.init == "pytorch"
    torch.manual_seed(0)
    default = build_networks(spec, 64, 0.125, 3).generator
    torch.manual_seed(0)
    plain = nn.Conv2d(3, 8, 5, 2, 2, bias=False)  # same seed, same first layer shape as PyTorch builds it
    assert torch.equal(default.encoder.levels[0][0].weight, plain.weight)
    torch.manual_seed(0)
    dcgan = build_networks(replace(spec, init="dcgan"), 64, 0.125, 3).generator
    conv_std = dcgan.encoder.levels[0][0].weight.std().item()
    assert 0.015 < conv_std < 0.025  # N(0, 0.02)
    assert default.encoder.levels[0][0].weight.std().item() > 0.04  # kaiming-uniform of 75 inputs: ~0.067
    # A run records the initialisation it used; --init selects the other one and is part of its identity.
    run_dir = train(make_config(workdir, steps=1, init="dcgan"))
    assert json.loads((run_dir / "spec.json").read_text())["init"] == "dcgan"
    assert run_dir.name == "full-builtin64-w0.125-b4-init-dcgan-seed0"
    assert train(make_config(workdir, steps=1)).name == "full-builtin64-w0.125-b4-seed0"
    assert load_run(run_dir).spec.init == "dcgan"
    with pytest.raises(KpbenchError, match="unknown initialisation"):
        make_config(workdir, init="xavier")


def test_pytorch04_initialisation_has_that_versions_bounds() -> None:
    from torch import nn

    torch.manual_seed(0)
    generator = build_networks(replace(get_variant("full"), init="pytorch04"), 64, 0.25, 3).generator
    transposed = next(m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d))
    bound = 1 / (transposed.in_channels * 16) ** 0.5  # the 4x4 stem: 1/sqrt(C_in k^2)
    largest = transposed.weight.abs().max().item()
    assert 0.9 * bound < largest <= bound
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    scales = torch.cat([m.weight.detach() for m in norms])
    assert scales.min() >= 0 and scales.max() <= 1 and 0.4 < scales.mean() < 0.6  # U(0, 1)


def test_specs_written_before_init_existed_read_as_dcgan() -> None:
    from kpbench.variant import VariantSpec

    old = get_variant("full").to_dict()
    del old["init"]
    assert VariantSpec.from_dict(old).init == "dcgan"


def test_diagnostics_are_logged_at_the_set_interval(workdir: Path) -> None:
    run_dir = train(make_config(workdir, steps=6, diagnostics_every=2))
    entries = [e for e in read_log(run_dir) if e.get("event") == "diagnostics"]
    assert [e["step"] for e in entries] == [2, 4, 6]
    values = entries[-1]["diagnostics"]
    assert {"mask_iou", "prior_mask_iou", "mask_coverage", "true_coverage", "spatial_l1",
            "spatial_l1_empty", "spatial_l1_prior", "appearance_l1"} <= set(values)
    assert 0 <= values["mask_iou"] <= 1 and 0 <= values["mask_coverage"] <= 1
    # The empty mask's spatial L1 is the true mask's area: coverage x S^2.
    assert values["spatial_l1_empty"] == pytest.approx(values["true_coverage"] * 64 * 64, rel=1e-5)
    # Default: four times per epoch (58 images / batch 4 = 14 steps per epoch -> every 3 steps).
    other = train(make_config(workdir, seed=1, steps=6))
    assert [e["step"] for e in read_log(other) if e.get("event") == "diagnostics"] == [3, 6]


def test_collapse_watch_warns_once_after_a_sustained_stretch() -> None:
    from kpbench.diagnostics import CollapseWatch

    watch = CollapseWatch(patience_steps=30, min_checks=3)
    low = {"mask_iou": 0.01, "prior_mask_iou": 0.4, "mask_coverage": 0.0, "true_coverage": 0.3}
    high = low | {"mask_iou": 0.5}
    assert watch.update(10, low) is None and watch.update(20, high) is None  # recovered: counter resets
    assert [watch.update(step, low) for step in (30, 40, 50)] == [None, None, None]  # stretch 20 < 30
    message = watch.update(60, low)
    assert message and "below the prior mask's from step 30 to 60" in message
    assert watch.update(70, low) is None  # once


def test_a_second_trainer_of_a_locked_run_refuses_and_a_stale_lock_is_taken_over(workdir: Path) -> None:
    from kpbench.lock import RunLock, RunLocked, lock_path

    run_dir = run_path(make_config(workdir, steps=1))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from kpbench.lock import RunLock
        with RunLock(__import__("pathlib").Path({str(run_dir)!r}), "train"):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refusal = rf"run {run_dir.name} is in use by train process {holder.pid} on "
        with pytest.raises(RunLocked, match=refusal):
            train(make_config(workdir, steps=1))
        assert not run_dir.exists()  # the refused trainer touched nothing
    finally:
        holder.kill()  # killed, not released: the kernel frees the lock, the holder text stays
        holder.wait()
    assert str(holder.pid) in lock_path(run_dir).read_text()
    assert train(make_config(workdir, steps=1)) == run_dir  # a stale lock is taken over
    with RunLock(run_dir, "eval"):  # and released after training
        pass


def test_without_a_terminal_training_prints_plain_status_lines(workdir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(workdir, steps=5, progress=True, status_every=2)
    train(config)
    lines = [line for line in capsys.readouterr().out.splitlines() if " step " in line]
    name = run_path(config).name
    assert [line.split(" | ")[0] for line in lines] == [f"{name} step {k}/5" for k in (2, 4, 5)]
    for line in lines:
        assert "img/s" in line and "data " in line and "d/total=" in line and "left" in line
    assert "━" not in capsys.readouterr().out  # no progress-bar frames in a log file


def test_tensorboard_event_files_hold_the_logged_scalars(workdir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config(workdir, steps=3, tensorboard=True, diagnostics_every=3)
    run_dir = train(config)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/g/total", "losses/d/total", "speed/images_per_s", "speed/data_share",
            "diagnostics/mask_iou"} <= tags
    assert [event.step for event in events.Scalars("losses/g/total")] == [1, 2, 3]
    logged = [entry for entry in read_log(run_dir) if "losses" in entry]
    assert events.Scalars("losses/g/total")[-1].value == pytest.approx(logged[-1]["losses"]["g/total"])


def test_data_workers_default_to_none_on_the_cpu_and_two_on_cuda() -> None:
    assert TrainConfig().num_workers is None
    assert train_module.data_workers(None, torch.device("cpu")) == 0
    assert train_module.data_workers(None, torch.device("cuda")) == 2
    assert train_module.data_workers(3, torch.device("cpu")) == 3


@pytest.mark.parametrize("amx", [True, False])
def test_amp_auto_is_bf16_only_where_the_cpu_has_amx(amx: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from kpbench.runtime import resolve_amp

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == ("bf16" if amx else "off")
    assert [resolve_amp(mode, cpu) for mode in ("off", "bf16", "fp16")] == ["off", "bf16", "fp16"]
    # What the trainer autocasts to is what "auto" resolved to.
    spec = get_variant("full")
    nets = build_networks(spec, 64, 0.0625, 3)
    trainer = Trainer(spec, nets.generator, nets.discriminator, TrainConfig(amp="auto"), cpu)
    assert trainer.amp == resolve_amp("auto", cpu)
    assert trainer.amp_dtype == (torch.bfloat16 if amx else None)


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "off"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_amp_auto_on_cuda_needs_bf16_tensor_cores(capability: tuple[int, int], expected: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Pre-Ampere GPUs (compute capability < 8) only emulate bf16, although
    # torch.cuda.is_bf16_supported() says yes there.
    from kpbench.runtime import resolve_amp

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_amp("auto", torch.device("cuda", 0)) == expected


def test_a_run_logs_the_precision_it_trained_in(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "auto" is resolved on the training device and the start/resume entries say what it became.
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    config = make_config(workdir, steps=2, amp="auto")
    run_dir = train(config)
    assert [e["amp"] for e in read_log(run_dir) if e.get("event") == "start"] == ["bf16"]
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    train(replace(config, steps=3))  # operational: the same run, resumed in float32
    assert [e["amp"] for e in read_log(run_dir) if e.get("event") in ("start", "resume")] == ["bf16", "off"]
    assert checkpoint(run_dir)["step"] == 3
