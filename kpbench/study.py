"""The user study: a blind, self-contained browser page and the statistics of its answers.

``make_study`` writes ``DIR/study.html`` (one file, images inlined, no external script, font or
request; opens from disk) and ``DIR/key.json`` (which image came from which model: never in the
page). Questions:

- ``pair``: which of two images looks more realistic. Two models given the same patches, or a real
  image and a generated one.
- ``contains`` (optional): does this generated image contain these patches (yes / no).

Image ids in the page are opaque (``q3-a``). The page shuffles the question order and left/right
placement per participant from the study seed and the participant id. It keeps answers in the
browser's local storage across reloads and downloads them as JSON: page id, seed, participant,
answers with timings.

``analyze_study`` checks each answers file against ``key.json``. Files that are unreadable, from
another study, tampered with, incomplete or duplicated are skipped and counted. It returns result
rows, protocol ``user_study`` (registered, with its metrics, by ``protocols/user_study.py``),
with the preference statistics of :mod:`kpbench.stats`:

- per pair of models, the preference rate with a Wilson interval and a two-sided binomial test;
- a Bradley-Terry score per model (log strength, centred) with participant-bootstrap intervals;
- the realism rate of each model's images against real ones;
- the participants' pairwise agreement per question.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kpbench.errors import KpbenchError
from kpbench.io import atomic_write_text
from kpbench.paths import WorkDir
from kpbench.results import ResultRow
from kpbench.seeds import check_seed
from kpbench.stats import binomial_p_value, bradley_terry, pairwise_agreement, wilson_interval

PROTOCOL = "user_study"
REAL = "real"  # the "model" of real images in key.json
KEY_FILE, PAGE_FILE = "key.json", "study.html"
BOOTSTRAP_SAMPLES = 1000

# --- making the page -------------------------------------------------------------------------


@dataclass
class _Question:
    id: str
    kind: str  # "pair" or "contains"
    images: dict[str, str]  # opaque image id -> model ("real" or a run label)
    sample: int  # test index
    # what the page shows: image id -> data URI; patches for "contains"
    pictures: dict[str, str] = field(default_factory=dict)
    patches: list[str] = field(default_factory=list)
    shown_patches_from: int | None = None  # "contains": the test index the shown patches come from


def _png_data_uri(image: torch.Tensor, scale: int = 3) -> str:
    """(3, S, S) in [-1, 1] -> a PNG data URI, upscaled (nearest) so that faces are visible."""
    from PIL import Image

    from kpbench.grids import to_rgb_uint8

    pixels = to_rgb_uint8(image[None].float().cpu())[0]
    picture = Image.fromarray(pixels).resize((pixels.shape[1] * scale, pixels.shape[0] * scale),
                                             Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _pick_runs(workdir: WorkDir, variants: Sequence[str] | None) -> dict[str, Path]:
    """One run per requested variant (all trained variants when None): the lowest seed among
    its runs with the fewest non-default settings. Returns label -> run folder."""
    from kpbench.runs import list_runs
    from kpbench.variant import get_variant

    infos = [info for info in list_runs(workdir.runs) if info.checkpointed]
    wanted = list(variants) if variants else list(dict.fromkeys(info.variant for info in infos))
    chosen: dict[str, Path] = {}
    for name in wanted:
        get_variant(name)
        candidates = sorted((info for info in infos if info.variant == name),
                            key=lambda info: (len(info.tags), info.seed, info.name))
        if not candidates:
            raise KpbenchError(f"no trained run of {name} under {workdir.runs}")
        chosen[name] = candidates[0].run_dir
    if len(chosen) < 1:
        raise KpbenchError(f"no trained runs under {workdir.runs}")
    return chosen


def make_study(workdir: WorkDir, out: Path, variants: Sequence[str] | None = None, questions: int = 40,
               seed: int = 0, contains: int = 0, real: bool = True) -> Path:
    """Write ``out/study.html`` and ``out/key.json``; returns the page's path. ``questions``
    realism questions (pairs of models, and each model against a real image when ``real``),
    plus ``contains`` patch questions."""
    from kpbench.runs import load_run
    from kpbench.samples import make_sample_dataset

    if questions < 1 and contains < 1:
        raise KpbenchError("a study needs at least one question")
    check_seed(seed)
    runs = {name: load_run(path) for name, path in _pick_runs(workdir, variants).items()}
    data_specs = {run.config.data for run in runs.values()}
    if len(data_specs) > 1:
        raise KpbenchError("the chosen runs were trained on different data; choose runs of one dataset")
    models = list(runs)
    comparisons: list[tuple[str, str]] = list(itertools.combinations(models, 2))
    if real:
        comparisons += [(model, REAL) for model in models]
    if questions and not comparisons:
        raise KpbenchError("realism questions need two models, or --real")
    spec = next(iter(data_specs))
    samples = make_sample_dataset(spec, "test", seed, workdir, flip=False)
    if questions + contains > len(samples):
        raise KpbenchError(f"{questions + contains} questions need as many test images, the test split has "
                           f"{len(samples)}: repeated images would let participants learn which are real; "
                           "ask fewer questions or use a larger dataset")
    rng = np.random.default_rng(seed)
    secret = random.SystemRandom()  # ids and sides: not derivable from the seed the page shows

    def opaque() -> str:
        return "i" + "".join(secret.choice("0123456789abcdef") for _ in range(12))
    order = rng.permutation(len(samples))
    generator = torch.Generator().manual_seed(seed)
    items: list[_Question] = []
    for number in range(questions + contains):
        index = int(order[number % len(order)])
        item = samples[index]
        patches = item["patches"][None]
        z = torch.rand(1, next(iter(runs.values())).spec.z_dim, generator=generator) * 2 - 1

        def picture(model: str, patches: torch.Tensor = patches, z: torch.Tensor = z,
                    item: dict = item) -> str:
            image = item["image"] if model == REAL else runs[model].generate(patches, z=z)[0][0]
            return _png_data_uri(image)

        qid = opaque()
        if number < questions:
            pair = list(comparisons[number % len(comparisons)])
            secret.shuffle(pair)  # which model is first in the page says nothing
            ids = {opaque(): pair[0], opaque(): pair[1]}
            question = _Question(qid, "pair", ids, index)
        else:
            # Half the patch questions show the image's own patches, half another image's.
            own = bool(rng.integers(2))
            model = models[number % len(models)]
            source = index if own else int(order[(number + 1) % len(order)])
            question = _Question(qid, "contains", {opaque(): model}, index, shown_patches_from=source)
            question.patches = [_png_data_uri(p) for p in samples[source]["patches"]]
        question.pictures = {image_id: picture(model) for image_id, model in question.images.items()}
        items.append(question)

    out.mkdir(parents=True, exist_ok=True)
    (out / "answers").mkdir(exist_ok=True)
    key = {
        "format": 1, "seed": seed, "workdir": str(workdir.root),
        "runs": {name: str(run.run_dir) for name, run in runs.items()},
        "questions": [{"id": q.id, "kind": q.kind, "images": q.images, "sample": q.sample,
                       "patches_from": q.shown_patches_from} for q in items],
    }
    page_id = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    key["page_id"] = page_id
    atomic_write_text(out / KEY_FILE, json.dumps(key, indent=1))
    shown = list(items)
    secret.shuffle(shown)  # the page's own order says nothing either
    payload = {"pageId": page_id, "seed": seed,
               "questions": [{"id": q.id, "kind": q.kind, "images": q.pictures, "patches": q.patches}
                             for q in shown]}
    template = resources.files("kpbench").joinpath("study_page.html").read_text(encoding="utf-8")
    # JSON inside a <script type="application/json">: escape "<" so no "</script>" can end it.
    data = json.dumps(payload).replace("<", "\\u003c")
    page = template.replace("{{PAGE_ID}}", html.escape(page_id)).replace("{{DATA}}", data)
    return atomic_write_text(out / PAGE_FILE, page)


# --- reading answers -------------------------------------------------------------------------


@dataclass
class StudyAnswers:
    """The usable answers of a study and what was skipped (reason -> files)."""

    participants: dict[str, dict[str, str]]  # participant -> question id -> chosen image id / yes / no
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, path: Path) -> None:
        self.skipped.setdefault(reason, []).append(path.name)


def read_answers(key: dict[str, Any], files: Iterable[Path]) -> StudyAnswers:
    questions = {q["id"]: q for q in key["questions"]}
    result = StudyAnswers({})
    seen_files = 0
    for path in files:
        seen_files += 1
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            result.skip("not a readable answers file", Path(path))
            continue
        if record.get("pageId") != key["page_id"]:
            result.skip("from another study (page id)", Path(path))
            continue
        answers = record.get("answers")
        participant = record.get("participant")
        if not isinstance(answers, list) or not isinstance(participant, str) or not participant.strip():
            result.skip("malformed (no participant or answers)", Path(path))
            continue
        chosen: dict[str, str] = {}
        valid = True
        for answer in answers:
            fields_ok = (isinstance(answer, dict) and isinstance(answer.get("question"), str)
                         and isinstance(answer.get("choice"), str))
            question = questions.get(answer["question"]) if fields_ok else None
            choice = answer["choice"] if fields_ok else None
            allowed = set(question["images"]) if question and question["kind"] == "pair" else {"yes", "no"}
            if question is None or choice not in allowed:
                valid = False
                break
            chosen[answer["question"]] = choice
        if not valid:
            result.skip("tampered (unknown question or choice)", Path(path))
            continue
        if set(chosen) != set(questions):
            result.skip("incomplete", Path(path))
            continue
        if participant in result.participants:
            result.skip("duplicate participant", Path(path))
            continue
        result.participants[participant] = chosen
    if seen_files == 0:
        raise KpbenchError("no answers files given")
    return result


def _wins(key: dict[str, Any], participants: dict[str, dict[str, str]], models: list[str]) -> np.ndarray:
    index = {model: i for i, model in enumerate(models)}
    wins = np.zeros((len(models), len(models)))
    for question in key["questions"]:
        if question["kind"] != "pair":
            continue
        images = question["images"]  # image id -> model, two of them
        for chosen in participants.values():
            picked = chosen[question["id"]]
            other = next(image for image in images if image != picked)
            wins[index[images[picked]], index[images[other]]] += 1
    return wins


def _check_key(key: Any) -> None:
    """Raise ValueError unless ``key`` has the shape make_study writes."""
    if not isinstance(key, dict) or not isinstance(key.get("page_id"), str):
        raise ValueError("no page id")
    runs, questions = key.get("runs"), key.get("questions")
    if not isinstance(runs, dict) or not runs or not isinstance(questions, list):
        raise ValueError("no runs or questions")
    for question in questions:
        images = question.get("images") if isinstance(question, dict) else None
        if (not isinstance(images, dict) or question.get("kind") not in ("pair", "contains")
                or not isinstance(question.get("id"), str) or "sample" not in question
                or len(images) != (2 if question["kind"] == "pair" else 1)
                or not set(images.values()) <= set(runs) | {REAL}):
            raise ValueError(f"question {question!r:.80} is malformed")


def analyze_study(study_dir: Path, files: Iterable[Path]) -> tuple[dict[Path, list[ResultRow]], StudyAnswers]:
    """Rows per run folder (write them with ``write_rows(run, "user_study", rows)``) and the
    answers that were used. Raises KpbenchError when nothing usable remains."""
    from kpbench.runs import describe_run

    key_path = Path(study_dir) / KEY_FILE
    try:
        key = json.loads(key_path.read_text())
        _check_key(key)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise KpbenchError(f"{key_path} is not a study key ({type(error).__name__}: {error})") from None
    answers = read_answers(key, files)
    participants = answers.participants
    if not participants:
        reasons = "; ".join(f"{len(names)} {reason}" for reason, names in answers.skipped.items())
        raise KpbenchError(f"no usable answers ({reasons or 'none given'})")
    runs = {name: Path(path) for name, path in key["runs"].items()}
    models = [*runs, REAL]
    n_people = len(participants)
    note = f"study {key['page_id']}: {n_people} participants" + "".join(
        f"; {len(names)} skipped: {reason}" for reason, names in answers.skipped.items())
    rows: dict[str, list[ResultRow]] = {name: [] for name in runs}
    seeds = {name: (info.seed if (info := describe_run(path)) else 0) for name, path in runs.items()}

    def row(model: str, condition: str, metric: str, value: float, n: int, ci: tuple[float, float],
            extra: str = "") -> None:
        rows[model].append(ResultRow(model, seeds[model], PROTOCOL, condition, metric, float(value), int(n),
                                     "", note + extra, float(ci[0]), float(ci[1])))

    wins = _wins(key, participants, models)
    for a, b in itertools.permutations(models, 2):
        if a == REAL:
            continue
        i, j = models.index(a), models.index(b)
        won, n = int(wins[i, j]), int(wins[i, j] + wins[j, i])
        if n == 0:
            continue
        metric = "realism" if b == REAL else "preference"
        condition = "vs real" if b == REAL else f"vs {b}"
        p_value = binomial_p_value(won, n)
        row(a, condition, metric, won / n, n, wilson_interval(won, n),
            f"; two-sided binomial p = {p_value:.3g}")
        row(a, condition, f"{metric}_p_value", p_value, n, (math.nan, math.nan),
            "; two-sided exact binomial test of a rate of 0.5")
    # Bradley-Terry over every model that took part in a pair question, real images included.
    scores = bradley_terry(wins)
    rng = np.random.default_rng(int(key.get("seed", 0)))
    people = list(participants)
    boot = []
    for _ in range(BOOTSTRAP_SAMPLES):
        sample = [people[i] for i in rng.integers(len(people), size=len(people))]
        resampled = {f"{k}:{person}": participants[person] for k, person in enumerate(sample)}
        boot.append(bradley_terry(_wins(key, resampled, models)))
    low, high = np.percentile(np.array(boot), [2.5, 97.5], axis=0)
    judged = wins.sum(1) + wins.sum(0)
    for i, model in enumerate(models):
        if model != REAL and judged[i] > 0:
            real_text = f", real images {scores[-1]:+.2f}" if judged[-1] > 0 else ""
            row(model, "all pairs", "bt_score", scores[i], int(judged[i]), (low[i], high[i]),
                f"; log strength{real_text}")
    # Patch questions: how often "yes" is right.
    for name in runs:
        right = total = 0
        for question in key["questions"]:
            if question["kind"] != "contains" or name not in question["images"].values():
                continue
            truth = "yes" if question.get("patches_from") == question["sample"] else "no"
            for chosen in participants.values():
                total += 1
                right += chosen[question["id"]] == truth
        if total:
            row(name, "contains patches", "patch_recognition", right / total, total,
                wilson_interval(right, total))
    by_question: dict[str, list[str]] = {}
    for chosen in participants.values():
        for question, choice in chosen.items():
            by_question.setdefault(question, []).append(choice)
    agreement, questions_counted = pairwise_agreement(by_question)
    for name in runs:
        row(name, "all participants", "agreement", agreement, questions_counted, (math.nan, math.nan),
            "; study-wide pairwise agreement (chance 0.5)")
    return {runs[name]: model_rows for name, model_rows in rows.items()}, answers
