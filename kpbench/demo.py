"""``kpbench demo``: the whole benchmark, small, on the built-in dataset, with no network.

prepare boxes -> train every registered variant -> every protocol on every run -> report.
Each stage goes through the same library calls as the individual commands, so the demo is also
an end-to-end check of the suite. Re-running it resumes: finished runs are not retrained.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from kpbench.paths import WorkDir
from kpbench.protocol import ALL, EvalOptions, evaluate, list_protocols
from kpbench.report import ReportResult, build_report
from kpbench.samples import DataSpec, load_boxes, open_data
from kpbench.train import TrainConfig, train
from kpbench.variant import get_variant

DEMO_REPORT_NAME = "demo"


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo; the defaults finish in about ten minutes on a 2-core CPU."""

    images: int = 1200  # built-in images (90 % train, 10 % test)
    size: int = 64
    width: float = 0.125
    batch_size: int = 16
    steps: int = 600
    seeds: tuple[int, ...] = (0,)
    # The paper's model and the four ablations of its objective and components; the architecture
    # ablations of its Fig. 4 and 5 run in plans/paper-cpu.toml (kpbench run).
    variants: tuple[str, ...] = ("full", "naive_gan", "nomask", "autoencoder", "cgan")
    eval_samples: int = 120
    fid_samples: int = 120
    extractor: str = "inception"
    device: str | None = None

    @property
    def data(self) -> DataSpec:
        return DataSpec(source=f"builtin:{self.images}", size=self.size)


# A seconds-long plan for the test suite: every stage runs, nothing is learned.
TINY_PLAN = DemoPlan(images=48, width=0.0625, batch_size=4, steps=2, eval_samples=8, fid_samples=8,
                     extractor="random-conv")


def run_demo(plan: DemoPlan, workdir: WorkDir, say: Callable[[str], None] = print,
             progress: bool = True) -> ReportResult:
    started = time.perf_counter()

    def stage(text: str) -> None:
        say(f"[{time.perf_counter() - started:6.1f}s] {text}")

    dataset = open_data(plan.data)
    stage(f"built-in dataset: {len(dataset)} images; detecting key patches")
    load_boxes(dataset, plan.data, workdir, progress=progress)

    variants = [get_variant(name).name for name in plan.variants]
    for seed in plan.seeds:
        for variant in variants:
            stage(f"training {variant} (seed {seed}, {plan.steps} steps, width {plan.width})")
            config = TrainConfig(
                variant=variant, data=plan.data, seed=seed, width=plan.width,
                batch_size=plan.batch_size, steps=plan.steps, sample_every=max(1, plan.steps // 2),
                checkpoint_every=max(1, plan.steps // 2), device=plan.device, num_workers=0,
                workdir=str(workdir.root), progress=progress,
            )
            train(config)

    stage("evaluating: " + ", ".join(protocol.name for protocol in list_protocols()))
    options = EvalOptions(max_samples=plan.eval_samples, fid_samples=plan.fid_samples,
                          extractor=plan.extractor, classify_samples=plan.images,
                          device=plan.device)
    evaluate(workdir, [ALL], variants, list(plan.seeds), options,
             on_progress=lambda text: stage(f"  {text}"))

    stage("writing the report")
    result = build_report(
        workdir, DEMO_REPORT_NAME, title="kpbench demo: built-in creatures",
        descriptions={protocol.name: protocol.description for protocol in list_protocols()},
    )
    stage(f"done: {result.html}")
    return result


def plan_with(plan: DemoPlan, **overrides: object) -> DemoPlan:
    """The plan with the given fields replaced (None values keep the plan's own)."""
    return replace(plan, **{key: value for key, value in overrides.items() if value is not None})


def default_demo_workdir() -> Path:
    return Path("kpbench-demo")
