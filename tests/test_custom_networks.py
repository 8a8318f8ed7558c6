"""A variant that brings its own networks, from a file outside kpbench: a generator that is not a
U-net (self-attention over patch embeddings, mean-pooled) is written to a temporary folder by this
test only, then trained, resumed bit-exactly, evaluated by every protocol, reported and judged,
and loaded again from what its run recorded. The contract's checks give one-line errors."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import kpbench.plugins as plugins
import kpbench.variant as variant_module
from kpbench.cli import app
from kpbench.errors import KpbenchError
from kpbench.nets import CustomGenerator, build_networks
from kpbench.paths import RunDir, WorkDir
from kpbench.report import build_report
from kpbench.runs import load_run
from kpbench.train import Batch, TrainConfig, Trainer, train
from kpbench.variant import (
    CUSTOM,
    DiscriminatorNetwork,
    GeneratorNetwork,
    get_variant,
    list_variants,
    reference_variant,
)

VARIANT = "attention_pool"
PLUGIN = textwrap.dedent('''
    """Not a U-net: self-attention over patch embeddings, a mean over the patches (so the order
    of the patches does not matter), one linear layer to a coarse image and mask, upsampled."""

    from dataclasses import replace

    import torch
    import torch.nn.functional as F
    from torch import nn

    from kpbench.variant import GeneratorNetwork, LossTerm, reference_variant, register_variant

    TOKEN, COARSE = 16, 8


    class AttentionPool(nn.Module):
        def __init__(self, settings):
            super().__init__()
            self.size = settings.size
            self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(3 * 16, TOKEN))
            self.attention = nn.TransformerEncoderLayer(TOKEN, nhead=2, dim_feedforward=2 * TOKEN,
                                                        dropout=0.0, batch_first=True)
            self.head = nn.Linear(TOKEN + settings.spec.z_dim, 4 * COARSE * COARSE)

        def encode(self, patches):
            b, n = patches.shape[:2]
            tokens = self.embed(patches.flatten(0, 1)).unflatten(0, (b, n))  # (B, N, TOKEN)
            return self.attention(tokens).mean(1)  # (B, TOKEN)

        def forward(self, patches, z):
            maps = self.head(torch.cat([self.encode(patches), z], 1)).view(-1, 4, COARSE, COARSE)
            maps = F.interpolate(maps, size=self.size, mode="bilinear", align_corners=False)
            return torch.tanh(maps[:, :3]), torch.sigmoid(maps[:, 3:])


    def total_variation(inputs):
        image = inputs.out.image.float()
        return (image[..., 1:, :] - image[..., :-1, :]).abs().mean()


    ATTENTION_POOL = register_variant(replace(
        reference_variant(),
        name="attention_pool",
        description="Self-attention over patch embeddings, mean-pooled; the paper's discriminator.",
        encoder_fusion="custom",
        generator_network=GeneratorNetwork(AttentionPool, order_invariant=True),
        loss_terms=(LossTerm("total_variation", 1.0, total_variation),),
    ), order=100)
''')
TRAIN = ["--data", "builtin:48", "--batch-size", "4", "--width", "0.0625", "--checkpoint-every", "1000",
         "--sample-every", "1000"]
EVAL = ["--max-samples", "4", "--batch-size", "4", "--fid-samples", "4", "--fid-reference-samples", "4",
        "--extractor", "random-conv", "--classify-samples", "24", "--folds", "2", "--min-per-class", "3",
        "--sigmas", "0", "--sigmas", "0.5"]

runner = CliRunner()


def invoke(*args: str | Path) -> Any:
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return result


def same(a: Any, b: Any) -> bool:
    """Bit-for-bit equality of nested checkpoint contents."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def forget_plugins() -> None:
    """As a fresh process that names no plug-in: the variant unregistered, its module not
    imported, KPBENCH_PLUGINS unset (the ``registries`` fixture restores it)."""
    os.environ.pop(plugins.PLUGINS_ENV, None)
    variant_module._REGISTRY.pop(VARIANT, None)
    for path, name in list(plugins._FILE_MODULES.items()):
        sys.modules.pop(name, None)
        plugins._FILE_MODULES.pop(path)


@pytest.fixture
def plugin_file(tmp_path: Path) -> Path:
    path = tmp_path / "project" / "attention_variant.py"
    path.parent.mkdir()
    path.write_text(PLUGIN)
    return path


def test_a_variant_file_outside_kpbench_trains_resumes_evaluates_and_is_judged(
        registries: None, plugin_file: Path, tmp_path: Path) -> None:
    assert VARIANT not in {spec.name for spec in list_variants()}  # only the file registers it
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_plugin = ("--plugin", plugin_file, "train", "--variant", VARIANT)
    invoke(*train_plugin, "--steps", "4", "--workdir", straight, *TRAIN)
    spec = get_variant(VARIANT)
    assert spec.order_invariant and spec.generator_network is not None
    assert spec.source is not None and Path(spec.source.file) == plugin_file.resolve()

    # Resume: 2 steps, then on to 4 (a fresh registry in between), the same bits as 4 at once.
    invoke(*train_plugin, "--steps", "2", "--workdir", resumed, *TRAIN)
    forget_plugins()
    invoke(*train_plugin, "--steps", "4", "--workdir", resumed, *TRAIN)
    [run_dir] = WorkDir.resolve(straight).runs.glob(f"{VARIANT}-*")
    [resumed_dir] = WorkDir.resolve(resumed).runs.glob(f"{VARIANT}-*")
    assert same(RunDir(run_dir).read_checkpoint(), RunDir(resumed_dir).read_checkpoint())

    # The run records where its networks came from; the log has the variant's own term and the
    # diagnostics of its predicted masks.
    recorded = json.loads(RunDir(run_dir).spec.read_text())
    assert recorded["generator_network"]["build"] == "attention_variant.py:AttentionPool"
    assert recorded["source"]["sha256"] == plugins.sha256_file(plugin_file)
    log = [json.loads(line) for line in RunDir(run_dir).log.read_text().splitlines()]
    assert any("g/total_variation" in entry.get("losses", {}) for entry in log)
    assert any("mask_iou" in entry.get("diagnostics", {}) for entry in log)

    # A later process that never named the file rebuilds the networks from the run's record.
    forget_plugins()
    run = load_run(run_dir)
    assert isinstance(run.generator, CustomGenerator) and run.supports_variable_n
    weights = RunDir(run_dir).read_checkpoint()["models"]["generator"]
    assert same(run.generator.state_dict(), weights)
    image, mask = run.generate(torch.zeros(2, 5, 3, 64, 64))  # any N: trained on 3
    assert image.shape == (2, 3, 64, 64) and mask is not None and mask.shape == (2, 1, 64, 64)

    # Every protocol, the reference beside it for the claims; the report needs no --plugin.
    invoke("train", "--variant", "full", "--steps", "1", "--workdir", straight, *TRAIN)
    forget_plugins()
    invoke("eval", "--protocol", "all", "--workdir", straight, *EVAL)
    protocols = {path.stem for path in RunDir(run_dir).results.glob("*.csv")}
    assert protocols == {"patches", "noise", "num_patches", "combination", "fid", "classification"}
    classification = (RunDir(run_dir).results / "classification.csv").read_text()
    assert "encoder:trained" in classification
    forget_plugins()
    report = build_report(WorkDir.resolve(straight), include_images=False)
    assert VARIANT in set(report.summary["variant"])
    markdown = report.markdown.read_text()
    assert f"more realistic than {VARIANT}'s" in markdown  # the realism claim judges it


def test_a_run_whose_plugin_is_gone_or_changed_says_so_in_one_line(
        registries: None, plugin_file: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    invoke("--plugin", plugin_file, "train", "--variant", VARIANT, "--steps", "1", "--workdir", work, *TRAIN)
    [run_dir] = WorkDir.resolve(work).runs.glob(f"{VARIANT}-*")

    forget_plugins()
    moved = tmp_path / "moved" / plugin_file.name
    moved.parent.mkdir()
    plugin_file.rename(moved)
    with pytest.raises(KpbenchError, match=r"cannot be imported .*attention_variant\.py not found"):
        load_run(run_dir)
    result = runner.invoke(app, ["eval", "--protocol", "patches", "--workdir", str(work), *EVAL])
    assert result.exit_code == 2 and "Traceback" not in result.output
    # One line saying why the run is skipped, one summing up (other runs would be evaluated).
    warning, summary = result.stderr.strip().splitlines()
    assert warning.startswith(f"warning: skipped run {run_dir.name}: ") and "attention_variant.py" in warning
    assert summary == f"error: evaluated 0 runs; skipped 1 that could not be loaded: {run_dir.name} " \
                      "(each said why above)"

    # The same file in another place, named with --plugin, loads the run and continues it.
    invoke("--plugin", moved, "runs", "--workdir", work)
    assert isinstance(load_run(run_dir).generator, CustomGenerator)
    config = replace(get_config(run_dir), steps=2, workdir=str(work), progress=False)
    train(config)
    # Changed code is another model: continuing it is refused.
    forget_plugins()
    moved.write_text(PLUGIN + "\n# changed\n")
    plugins.add_plugin(str(moved))
    with pytest.raises(KpbenchError, match=r"spec\.source\.sha256"):
        train(replace(config, steps=3))


def get_config(run_dir: Path) -> TrainConfig:
    return TrainConfig.from_dict(json.loads(RunDir(run_dir).config.read_text())["config"])


class WrongSize(torch.nn.Module):
    def __init__(self, settings: Any) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, patches: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.tanh(self.scale * patches[:, 0, :, :32, :32]), None


class FirstPatch(torch.nn.Module):
    """Image = the first patch: not order-invariant whatever it promises."""

    def __init__(self, settings: Any) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, patches: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.scale * patches[:, 0])


class PooledDiscriminator(torch.nn.Module):
    def __init__(self, settings: Any) -> None:
        super().__init__()
        self.score = torch.nn.Linear(3, 1)

    def forward(self, image: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        return self.score(image.mean((2, 3))).flatten()  # (B,)


def custom(name: str, build: Any, **changes: Any) -> Any:
    """A variant with generator ``build`` and no mask (appearance loss on the true mask)."""
    return replace(reference_variant(), name=name, description=name, encoder_fusion=CUSTOM,
                   mask_decoder=False, spatial_weight=0.0, appearance_mask="true",
                   generator_network=GeneratorNetwork(build, **changes))


def test_the_contract_is_checked_when_the_networks_are_built(registries: None) -> None:
    with pytest.raises(KpbenchError, match=r"image is \(2, 3, 32, 32\) .* not \(B, 3, 64, 64\)"):
        build_networks(custom("wrong_size", WrongSize), 64, 0.0625, 3)
    with pytest.raises(KpbenchError, match="promises order invariance"):
        build_networks(custom("first_patch", FirstPatch, order_invariant=True), 64, 0.0625, 3)
    built = build_networks(custom("first_patch_honest", FirstPatch), 64, 0.0625, 3)
    assert not built.generator.order_invariant and not built.generator.can_encode
    with pytest.raises(ValueError, match='encoder_fusion="custom"'):
        replace(reference_variant(), generator_network=GeneratorNetwork(FirstPatch))


def test_a_variant_may_bring_its_own_discriminator(registries: None) -> None:
    spec = replace(
        custom("own_d", FirstPatch), name="own_d_too", discriminator=CUSTOM,
        discriminator_network=DiscriminatorNetwork(PooledDiscriminator), fake_kinds=("generated",))
    nets = build_networks(spec, 64, 0.0625, 3)
    assert isinstance(nets.discriminator, PooledDiscriminator)
    trainer = Trainer(spec, nets.generator, nets.discriminator, TrainConfig(), torch.device("cpu"))
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    before = [p.clone() for p in nets.discriminator.parameters()]
    losses = trainer.iteration(Batch(torch.rand(2, 3, 3, 64, 64) * 2 - 1, real, torch.ones(2, 1, 64, 64),
                                     torch.rand(2, 128), real.roll(1, 0)), lam=0.64)
    assert {"d/real", "d/generated", "g/adversarial", "g/appearance"} <= set(losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, nets.discriminator.parameters()))


def test_an_installed_package_registers_its_variant_through_an_entry_point(
        registries: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    (site / "my_attention_package-0.1.dist-info").mkdir(parents=True)
    (site / "my_attention_package-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: my-attention-package\nVersion: 0.1\n")
    (site / "my_attention_package-0.1.dist-info" / "entry_points.txt").write_text(
        "[kpbench.variants]\nattention = my_attention_package\n")
    (site / "my_attention_package.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_LOADED", [])
    monkeypatch.delitem(sys.modules, "my_attention_package", raising=False)
    spec = get_variant(VARIANT)
    assert spec.source is not None and spec.source.module == "my_attention_package"
    assert spec.to_dict()["generator_network"]["build"] == "my_attention_package:AttentionPool"
    sys.modules.pop("my_attention_package")


def test_the_documented_example_keeps_the_contract(registries: None) -> None:
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "attention_variant.py"
    plugins.add_plugin(str(example))
    spec = get_variant(VARIANT)
    nets = build_networks(spec, 64, 0.0625, 3)  # checks shapes, ranges, any N, order invariance
    assert nets.generator.order_invariant and nets.generator.can_encode
    assert [term.name for term in spec.loss_terms] == ["total_variation"]


def test_a_protocol_file_named_in_the_environment_is_registered(
        registries: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kpbench.protocol import list_protocols

    path = tmp_path / "echo_protocol.py"
    path.write_text(textwrap.dedent('''
        from kpbench.protocol import Protocol, register_protocol

        register_protocol(Protocol(name="test_echo_plugin", description="echo",
                                   run=lambda context: [context.row("test_echo_plugin", "as given",
                                                                    "mask_iou", 1.0, 1)]))
    '''))
    monkeypatch.setenv(plugins.PLUGINS_ENV, str(path))
    assert "test_echo_plugin" in {protocol.name for protocol in list_protocols()}
    monkeypatch.setenv(plugins.PLUGINS_ENV, str(tmp_path / "missing.py"))
    with pytest.raises(KpbenchError, match="plug-in file .*missing.py not found"):
        list_protocols()
