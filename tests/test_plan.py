"""Plans: a tiny plan end to end, skipping what is done, resuming a killed cell, reporting a failed
one without stopping the others, the dry run, and the submitit path on this machine."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kpbench.cli import app
from kpbench.errors import KpbenchError
from kpbench.plan import load_plan
from kpbench.runner import run_plan
from kpbench.runs import list_runs

REPO = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
seeds = [0]
[train]
steps = {steps}
width = 0.0625
batch_size = 4
checkpoint_every = {checkpoint_every}
sample_every = 1000
log_every = 1
num_workers = 0
device = "cpu"
[eval]
protocols = ["patches"]
max_samples = 8
fid_samples = 8
extractor = "random-conv"
device = "cpu"
[datasets.builtin]
source = "builtin:48"
{extra_dataset}
[[experiments]]
name = "random-patches"
variants = ["full"]
patch_source = ["key", "random"]
"""


def write_plan(folder: Path, steps: int = 2, checkpoint_every: int = 1000, extra_dataset: str = "") -> Path:
    path = folder / "tiny.toml"
    path.write_text(TINY.format(steps=steps, checkpoint_every=checkpoint_every, extra_dataset=extra_dataset))
    return path


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)


def test_a_tiny_plan_runs_end_to_end_and_a_second_invocation_skips_every_cell(tmp_path: Path) -> None:
    plan_path, work = write_plan(tmp_path), tmp_path / "work"
    first = invoke("run", plan_path, "-w", work)
    assert first.exit_code == 0, first.output
    assert "ran 2, skipped 0, failed 0" in first.stdout
    runs = {info.name: info for info in list_runs(work / "builtin" / "runs")}
    assert sorted(runs) == ["full-builtin48-random-w0.0625-b4-seed0", "full-builtin48-w0.0625-b4-seed0"]
    assert all(info.finished and info.evaluated_with(["patches"]) for info in runs.values())
    report = work / "builtin" / "reports" / "tiny" / "index.html"
    assert report.is_file() and "full-random" in report.read_text()
    logs = {name: (info.run_dir / "log.jsonl").read_text() for name, info in runs.items()}

    second = invoke("run", plan_path, "-w", work)
    assert second.exit_code == 0, second.output
    assert "ran 0, skipped 2, failed 0" in second.stdout
    assert {name: (info.run_dir / "log.jsonl").read_text() for name, info in runs.items()} == logs


def test_a_killed_cell_resumes_where_its_checkpoint_stopped(tmp_path: Path) -> None:
    plan_path, work = write_plan(tmp_path, steps=60, checkpoint_every=4), tmp_path / "work"
    log = work / "builtin" / "runs" / "full-builtin48-w0.0625-b4-seed0" / "log.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = textwrap.dedent(f"""
        from kpbench.cli import app
        app([ "run", {str(plan_path)!r}, "-w", {str(work)!r}])
    """)
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if log.exists() and sum('"losses"' in line for line in log.read_text().splitlines()) >= 10:
                break
            assert process.poll() is None, "the plan ended before it could be killed"
            time.sleep(0.1)
        else:
            pytest.fail("the first cell never reached step 10")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # killed: no chance to save anything more
        process.wait()
    steps_before = [json.loads(line)["step"] for line in log.read_text().splitlines() if '"losses"' in line]
    assert steps_before[-1] < 60

    result = invoke("run", plan_path, "-w", work)
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    resume = next(e for e in entries if e.get("event") == "resume")
    assert 4 <= resume["step"] <= steps_before[-1] and resume["step"] % 4 == 0  # from the last checkpoint
    assert [e["step"] for e in entries if "losses" in e][-1] == 60 and entries[-1]["event"] == "done"
    assert "ran 2, skipped 0, failed 0" in result.stdout


def test_a_failed_cell_is_reported_and_the_others_still_run(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    plan_path = write_plan(tmp_path, extra_dataset="[datasets.photos]\n")
    result = invoke("run", plan_path, "-w", tmp_path / "work", "--data", f"photos={empty}")
    assert result.exit_code == 2
    assert "ran 2, skipped 0, failed 2" in result.stdout
    flat = result.stdout.replace("\n", "")
    assert "photos/full-data-empty" in flat and "no image files" in flat
    assert "2 of 4 cells failed;" in result.output  # and no report for a dataset without results
    assert len(list_runs(tmp_path / "work" / "builtin" / "runs")) == 2


def test_a_cell_whose_run_cannot_be_loaded_for_evaluation_fails(tmp_path: Path) -> None:
    plan_path, work = write_plan(tmp_path), tmp_path / "work"
    assert invoke("run", plan_path, "-w", work).exit_code == 0
    checkpoint = work / "builtin" / "runs" / "full-builtin48-w0.0625-b4-seed0" / "checkpoints" / "last.pt"
    checkpoint.write_bytes(b"not a checkpoint")  # newer than its results: to be evaluated again
    result = invoke("run", plan_path, "-w", work)
    assert result.exit_code == 2
    assert "ran 0, skipped 1, failed 1" in result.stdout  # not "ran" with nothing evaluated
    assert "cannot read checkpoint" in result.stdout.replace("\n", "")


def test_plan_files_are_checked_with_clear_errors(tmp_path: Path) -> None:
    plan_path = write_plan(tmp_path)
    text = plan_path.read_text()
    for broken, message in (
        (text.replace('variants = ["full"]', 'variants = ["fulll"]'), "unknown variant 'fulll'"),
        (text.replace("steps = 2", "stepz = 2"), "unknown setting stepz in \\[train\\]"),
        (text.replace('protocols = ["patches"]', 'protocols = ["nois"]'), "unknown protocol nois"),
        (text.replace("[train]", "[train"), "not valid TOML"),
        (text.replace('device = "cpu"\n[datasets', 'device = "cpu"\nbn_mode = "eval"\n[datasets'),
         "plan .*tiny.toml: \\[eval\\]: unknown batch-norm mode 'eval'; use batch, running"),
        (text.replace("fid_samples = 8", "fid_sampels = 8"),
         "\\[eval\\]: unknown evaluation option fid_sampels; known: max_samples, .*fid.fid_samples"),
        (text.replace("[datasets.builtin]", "[eval.noise]\nsigma = [0.1]\n[datasets.builtin]"),
         "\\[eval\\]: unknown option 'sigma' of protocol noise; known: sigmas"),
        (text.replace("[datasets.builtin]", "[eval.noise]\nsigmas = 0.1\n[datasets.builtin]"),
         "\\[eval\\]: noise.sigmas takes a list, got 0.1"),
    ):
        plan_path.write_text(broken)
        with pytest.raises(KpbenchError, match=message):
            load_plan(plan_path)
    result = invoke("run", tmp_path / "missing.toml")
    assert result.exit_code == 2 and "no plan file" in result.output and "Traceback" not in result.output
    plan_path.write_text(text)
    result = invoke("run", plan_path, "--data", "nope=/tmp")
    assert result.exit_code == 2 and "does not have" in result.output


def test_a_protocols_own_options_come_from_its_table_or_by_name_in_eval(tmp_path: Path) -> None:
    plan_path = write_plan(tmp_path)
    text = plan_path.read_text()
    plan_path.write_text(text.replace("[datasets.builtin]", "[eval.noise]\nsigmas = [0, 0.5]\n"
                                      "[eval.fid]\nrealism_z = 2\n[datasets.builtin]"))
    from_tables = load_plan(plan_path).eval_options
    flat_keys = "fid_samples = 8\nsigmas = [0.0, 0.5]\nrealism_z = 2.0"  # 2.0: a whole number
    plan_path.write_text(text.replace("fid_samples = 8", flat_keys))
    flat = load_plan(plan_path).eval_options
    assert from_tables == flat
    assert (flat.setting("sigmas"), flat.setting("noise.sigmas"), flat.setting("fid.realism_z")) == \
        ((0.0, 0.5), (0.0, 0.5), 2)
    assert (flat.setting("fid_samples"), flat.setting("extractor"), flat.max_samples) == (8, "random-conv", 8)


def test_shipped_plans_expand_to_the_papers_experiments() -> None:
    cpu = load_plan(REPO / "plans" / "paper-cpu.toml", data={"folder": str(REPO / "tests")})
    names = {cell.name for cell in cpu.cells if cell.dataset == "builtin" and cell.config.seed == 0}
    expected_tags = {"", "-random", "-n2", "-n4", "-n5"}
    full_runs = {name.replace("full-builtin800", "").replace("-w0.125-b16-decay25-seed0", "")
                 for name in names if name.startswith("full-")}
    assert full_runs == expected_tags
    variants = {cell.config.variant for cell in cpu.cells}
    assert variants == {"full", "naive_gan", "nomask", "autoencoder", "cgan", "depth_concat",
                        "siamese_concat", "independent_masks", "noskip"}
    assert len(cpu.cells) == 2 * 3 * 13  # datasets x seeds x distinct runs
    paper = load_plan(REPO / "plans" / "paper.toml", data={"celeba": "/data/celeba"})
    config = paper.cells[0].config
    assert (config.width, config.batch_size, config.epochs, config.size) == (1.0, 64, 25, 64)
    assert (paper.eval_options.bn_mode, paper.eval_options.batch_size) == ("batch", 64)
    assert sorted({cell.config.seed for cell in paper.cells}) == [0, 1, 2]
    assert not load_plan(REPO / "plans" / "paper.toml").cells  # no folder: nothing to run, said so
    assert load_plan(REPO / "plans" / "paper.toml").datasets[0].skipped


def test_the_shipped_demo_plan_keeps_the_demos_settings_and_the_tiny_one_only_shrinks_them(
        tmp_path: Path) -> None:
    from kpbench.cli import demo_overrides
    from kpbench.plan import shipped_plan
    from kpbench.protocol import list_protocols

    demo = load_plan(shipped_plan("demo"), tmp_path)
    assert shipped_plan("demo") == REPO / "plans" / "demo.toml"  # a checkout's plans/ folder
    variants = [cell.config.variant for cell in demo.cells]
    assert variants == ["full", "naive_gan", "nomask", "autoencoder", "cgan"]
    config = demo.cells[0].config
    assert (config.data.source, config.data.size, config.width, config.batch_size, config.steps,
            config.lambda_decay_epochs, config.seed, config.num_workers) == ("builtin:1200", 64, 0.125, 16,
                                                                           250, 9, 0, 0)
    options = demo.eval_options
    assert (options.max_samples, options.setting("fid_samples"), options.setting("extractor"),
            options.setting("classify_samples")) == (120, 60, "inception", 1200)
    assert demo.protocols == tuple(protocol.name for protocol in list_protocols())
    # demo-tiny extends demo: the same experiments, smaller, under its own name and work dir.
    tiny = load_plan("demo-tiny")  # a shipped plan by name, as an installed kpbench finds it
    assert tiny.name == "demo-tiny"
    assert tiny.datasets[0].workdir.root == Path("kpbench-demo-tiny/builtin").resolve()
    assert [cell.config.variant for cell in tiny.cells] == variants
    small = tiny.cells[0].config
    assert (small.data.source, small.steps, small.width, small.lambda_decay_epochs, small.num_workers) == (
        "builtin:48", 2, 0.0625, 9, 0)
    assert tiny.eval_options.setting("extractor") == "random-conv"
    # kpbench demo's options replace single settings the same way.
    changed = load_plan(shipped_plan("demo"), tmp_path, overrides=demo_overrides(steps=10, images=600))
    config = changed.cells[0].config
    assert (config.steps, config.sample_every, config.data.source, config.width) == (
        10, 5, "builtin:600", 0.125)
    assert changed.eval_options.setting("classify_samples") == 600
    assert changed.eval_options.setting("fid_samples") == 60


def test_a_plan_extends_another_key_by_key_and_says_when_it_cannot(tmp_path: Path) -> None:
    base = write_plan(tmp_path)
    child = tmp_path / "child.toml"
    child.write_text('extends = "tiny.toml"\nname = "child"\n[train]\nsteps = 3\n[eval]\nmax_samples = 4\n')
    plan = load_plan(child, tmp_path / "work")
    assert plan.name == "child" and len(plan.cells) == 2
    settings = {(cell.config.steps, cell.config.width, cell.config.device) for cell in plan.cells}
    assert settings == {(3, 0.0625, "cpu")}
    assert (plan.eval_options.max_samples, plan.eval_options.setting("fid_samples")) == (4, 8)
    child.write_text('extends = "nowhere.toml"\n')
    with pytest.raises(KpbenchError, match="extends .*nowhere.toml, which does not exist"):
        load_plan(child)
    base.write_text('extends = "child.toml"\n')
    child.write_text('extends = "tiny.toml"\n')
    with pytest.raises(KpbenchError, match="which extends it back"):
        load_plan(child)
    with pytest.raises(KpbenchError, match="no plan file nonesuch .*shipped plans, usable by name: .*demo"):
        load_plan("nonesuch")


def test_flops_read_in_a_unit_that_keeps_three_digits() -> None:
    from kpbench.cost import format_flops

    assert [format_flops(value) for value in (4.17e9, 2.5e13, 1.0248e17)] == ["4.17 GFLOP", "25 TFLOP",
                                                                              "102 PFLOP"]


def test_dry_run_prints_the_cells_and_their_cost_and_runs_nothing(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import kpbench.cost

    def no_timing(*_: object) -> None:
        raise AssertionError("a dry run times an iteration only when asked (--time)")

    plan_path, work = write_plan(tmp_path), tmp_path / "work"
    with monkeypatch.context() as patched:
        patched.setattr(kpbench.cost, "measure_throughput", no_timing)
        result = invoke("run", plan_path, "-w", work, "--dry-run")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("  builtin")]
    assert sorted(line[1] for line in lines) == ["full-builtin48-random-w0.0625-b4-seed0",
                                                 "full-builtin48-w0.0625-b4-seed0"]
    assert all("[random-patches] not started; 2 it x" in " ".join(line) for line in lines)
    assert all(" ".join(line).endswith("GFLOP") for line in lines)  # no time without a measurement
    assert "add --time" in result.stdout and "GFLOP/s" not in result.stdout
    # On request: one timed iteration, and the device and precision the estimate holds for.
    timed = invoke("run", plan_path, "-w", work, "--dry-run", "--time", "--device", "cpu")
    assert timed.exit_code == 0, timed.output
    assert re.search(r"about \S+ \S+ at [0-9.]+ GFLOP/s measured on cpu in (float32|bf16 autocast)",
                     timed.stdout), timed.stdout
    assert all(re.search(r"GFLOP; ~\S+ \S+$", line) for line in timed.stdout.splitlines()
               if line.startswith("  builtin"))
    assert not (work / "builtin" / "runs").exists()


def test_a_dry_run_counts_a_folder_without_reading_its_images(tmp_path: Path, photo_folder: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Opening a folder checks every image (minutes on a large one): the dry run counts the files.
    import kpbench.data

    def no_reading(*_: object, **__: object) -> None:
        raise AssertionError("a dry run reads no image")

    monkeypatch.setattr(kpbench.data.Image, "open", no_reading)
    monkeypatch.setattr(kpbench.data, "read_rgb", no_reading)
    plan_path = tmp_path / "folder.toml"
    plan_path.write_text(TINY.format(steps=2, checkpoint_every=1000, extra_dataset="[datasets.photos]")
                         .replace("steps = 2", "epochs = 3"))
    result = invoke("run", plan_path, "-w", tmp_path / "work", "--data", f"photos={photo_folder}",
                    "--dry-run")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: " ".join(line.split()) for line in result.stdout.splitlines()
             if line.startswith("  ")}
    # 6 photos, 5 for training: 3 epochs of 5 // 4 batches; 48 built-in images: 3 x 43 // 4.
    assert "[random-patches] not started; ~3 it x" in lines["photos"], result.stdout
    assert "not started; 30 it x" in lines["builtin"] and lines["photos"].endswith("GFLOP")
    assert "~: epochs over the image files counted" in result.stdout


def test_the_submitit_path_runs_a_tiny_plan_with_the_local_executor(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    plan = load_plan(write_plan(tmp_path), tmp_path / "work")
    messages: list[str] = []
    result = run_plan(plan, "submitit-local", say=messages.append)
    assert [o.status for o in result.outcomes] == ["ran", "ran"], [o.detail for o in result.outcomes]
    assert all("job" in o.detail for o in result.outcomes)
    assert any("submitted 2 jobs (local)" in m for m in messages)
    assert all(info.finished and info.evaluated_with(["patches"])
               for info in list_runs(tmp_path / "work" / "builtin" / "runs"))
    assert result.reports["builtin"].is_file()
    # The same skip logic: nothing is submitted the second time.
    again = run_plan(plan, "submitit-local", say=messages.append)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"]


def test_a_cell_with_two_processes_trains_under_torchrun(tmp_path: Path) -> None:
    """What a multi-GPU job does (here with gloo on the CPU): torchrun starts kpbench.launch twice
    and the ranks share the run; evaluation then runs in this process."""
    import torch

    from kpbench.runner import execute_cell

    plan = load_plan(write_plan(tmp_path), tmp_path / "work")
    cell = plan.cells[0]
    work = execute_cell(cell, plan.protocols, plan.eval_options, processes=2)
    assert work.detail == "trained; evaluated patches" and set(work.seconds) == {"train", "evaluate"}
    saved = torch.load(cell.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 2 and len(saved["ranks"]) == 2  # both processes took part
    config = json.loads((cell.run_dir / "config.json").read_text())
    assert config["world_size"] == 2 and not list((tmp_path / "work").rglob("plan-configs/*.json"))


def test_one_run_asked_for_twice_must_be_asked_for_the_same_way(tmp_path: Path) -> None:
    plan_path = write_plan(tmp_path)
    text = plan_path.read_text()
    # Two lengths of one run would silently drop one of them: refused.
    plan_path.write_text(text + '[[experiments]]\nname = "longer"\nvariants = ["full"]\nsteps = [2, 5]\n')
    with pytest.raises(KpbenchError, match="asked for by .* with different settings .*steps: 2 vs 5"):
        load_plan(plan_path)
    # A list-valued setting (Adam's betas) is an axis only as a list of lists.
    plan_path.write_text(text + '[[experiments]]\nname = "betas"\nvariants = ["full"]\n'
                         'betas = [[0.5, 0.999], [0.0, 0.9]]\n')
    assert len(load_plan(plan_path).cells) == 2 + 1  # full-random, full (shared), full with other betas
    plan_path.write_text(text + '[[experiments]]\nname = "betas"\nvariants = ["full"]\nbetas = [0.0, 0.9]\n')
    assert {cell.config.betas for cell in load_plan(plan_path).cells} == {(0.5, 0.999), (0.0, 0.9)}


def test_a_longer_plan_extends_finished_runs(tmp_path: Path) -> None:
    plan_path, work = write_plan(tmp_path), tmp_path / "work"
    assert invoke("run", plan_path, "-w", work).exit_code == 0
    plan_path.write_text(plan_path.read_text().replace("steps = 2", "steps = 3"))
    result = invoke("run", plan_path, "-w", work)
    assert result.exit_code == 0 and "ran 2, skipped 0" in result.stdout
    assert all(info.step == 3 for info in list_runs(work / "builtin" / "runs"))


def test_box_detection_waits_for_another_process_building_the_same_cache(tmp_path: Path) -> None:
    """Ranks of one torchrun, or cells of a plan on a cluster, may open a fresh dataset at the
    same moment. Without the lock, both detected and one deleted the shared part files under
    the other. Now one detects, the other waits for its cache and reads it."""
    import fcntl

    from kpbench.boxcache import box_cache_path
    from kpbench.dataspec import DataSpec
    from kpbench.paths import WorkDir
    from kpbench.samples import open_data, patch_params

    spec = DataSpec(source="builtin:48")
    cache = box_cache_path(open_data(spec), patch_params(spec), WorkDir.resolve(tmp_path).cache)
    cache.parent.mkdir(parents=True)
    script = textwrap.dedent(f"""
        from kpbench.paths import WorkDir
        from kpbench.samples import make_sample_dataset
        from kpbench.dataspec import DataSpec
        make_sample_dataset(DataSpec(source="builtin:48"), "train", 0, WorkDir.resolve({str(tmp_path)!r}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(cache.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another builder is at work
        process = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
        time.sleep(4)
        assert process.poll() is None and not cache.exists()  # it waits rather than detecting too
    _, errors = process.communicate(timeout=300)  # the lock is free: it goes on
    assert process.returncode == 0, errors[-2000:]
    assert cache.is_file() and not list(cache.parent.glob("*.parts"))
