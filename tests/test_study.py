"""The user study: the page in a real browser (keyboard, reload, download), blindness, the
statistics against values worked out by hand, and bad answers files."""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kpbench.cli import app
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.paths import WorkDir
from kpbench.stats import binomial_p_value, bradley_terry, pairwise_agreement, wilson_interval
from kpbench.study import KEY_FILE, analyze_study, make_study
from kpbench.train import TrainConfig, train

VARIANTS = ("full", "nomask")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorkDir, Path]:
    root = tmp_path_factory.mktemp("study")
    base = TrainConfig(data=DataSpec(source="builtin:96"), width=0.0625, batch_size=4, steps=1,
                       num_workers=0, progress=False, workdir=str(root), sample_every=1000)
    for variant in VARIANTS:
        train(replace(base, variant=variant))
    workdir = WorkDir.resolve(root)
    folder = root / "study"
    make_study(workdir, folder, list(VARIANTS), questions=6, seed=3, contains=2)
    return workdir, folder


def answers_file(folder: Path, participant: str, choose=lambda question: 0, **changes: object) -> Path:
    """An answers file as the page writes it, built from key.json (choice index per question)."""
    key = json.loads((folder / KEY_FILE).read_text())
    answers = []
    for question in key["questions"]:
        options = sorted(question["images"]) if question["kind"] == "pair" else ["yes", "no"]
        answers.append({"question": question["id"], "choice": options[choose(question)],
                        "left": options[0], "right": options[1], "ms": 500})
    record = {"pageId": key["page_id"], "seed": key["seed"], "participant": participant,
              "complete": True, "answers": answers} | changes
    path = folder / "answers" / f"{participant}.json"
    path.write_text(json.dumps(record))
    return path


def test_statistics_match_values_worked_out_by_hand() -> None:
    # Wilson 95 % for 8 of 10: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.7167, half-width 0.2266.
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert all(math.isnan(bound) for bound in wilson_interval(0, 0))  # no data, no interval
    # Two-sided exact binomial test of 8 of 10 against 0.5: 2 * (45 + 10 + 1) / 1024.
    assert binomial_p_value(8, 10) == pytest.approx(112 / 1024)
    # Bradley-Terry with counts exactly proportional to strengths 4 : 2 : 1 recovers them.
    wins = np.array([[0, 40, 40], [20, 0, 20], [10, 10, 0]])
    scores = bradley_terry(wins)
    assert scores[0] - scores[1] == pytest.approx(math.log(2), abs=1e-6)
    assert scores[1] - scores[2] == pytest.approx(math.log(2), abs=1e-6)
    assert scores.sum() == pytest.approx(0, abs=1e-9)
    # Two groups where one always beats the other (full, real vs nomask, cgan), split within each:
    # no finite maximum-likelihood scores, so the prior applies and the scores settle.
    groups = np.array([[0, 3, 5, 5], [3, 0, 5, 5], [0, 0, 0, 3], [0, 0, 3, 0]])
    settled = bradley_terry(groups, iterations=100_000)
    assert np.isfinite(settled).all() and settled[:2].min() > settled[2:].max()
    assert np.allclose(settled, bradley_terry(groups, iterations=200_000), atol=1e-6)
    # A model that never loses still gets a finite score, above the others.
    unbeaten = bradley_terry(np.array([[0, 5, 5], [0, 0, 3], [0, 2, 0]]))
    assert np.isfinite(unbeaten).all() and unbeaten.argmax() == 0
    # q1: 1 of 3 pairs agree, q2: 1 of 1; q3 has one answer and does not count.
    agreement = pairwise_agreement({"q1": ["a", "a", "b"], "q2": ["b", "b"], "q3": ["a"]})
    assert agreement == (pytest.approx((1 / 3 + 1) / 2), 2)


def test_the_page_is_self_contained_and_never_names_a_variant(study: tuple[WorkDir, Path]) -> None:
    _, folder = study
    page = (folder / "study.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing fetched from anywhere
    assert "@import" not in page and "url(" not in page
    payload = json.loads(re.search(r'id="study-data">(.*?)</script>', page, re.S)[1])
    image_ids = [image for question in payload["questions"] for image in question["images"]]
    assert all(re.fullmatch(r"i[0-9a-f]{12}", image) for image in image_ids)  # opaque, no a/b slots
    assert len(set(image_ids)) == len(image_ids)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page).lower()
    for name in VARIANTS:
        assert name not in text
    assert not re.search(r"run|seed\d|checkpoint", re.sub(r"\bseed\b", "", text).replace("kpbench-study", ""))


def test_analyze_counts_bad_files_and_computes_rows(study: tuple[WorkDir, Path]) -> None:
    _, folder = study
    shutil.rmtree(folder / "answers")
    (folder / "answers").mkdir()
    good = [answers_file(folder, f"p{k}", choose=lambda q, k=k: k % 2) for k in range(3)]
    foreign = answers_file(folder, "foreign", pageId="0" * 16)
    tampered = answers_file(folder, "tampered")
    record = json.loads(tampered.read_text())
    record["answers"][0]["choice"] = "<img src=x onerror=alert(1)>"
    tampered.write_text(json.dumps(record))
    incomplete = answers_file(folder, "incomplete")
    record = json.loads(incomplete.read_text())
    record["answers"] = record["answers"][:2]
    incomplete.write_text(json.dumps(record))
    duplicate = folder / "answers" / "p0-again.json"
    duplicate.write_text(good[0].read_text())
    broken = folder / "answers" / "broken.json"
    broken.write_text("{not json")
    rows, answers = analyze_study(folder, [*good, foreign, tampered, incomplete, duplicate, broken])
    assert sorted(answers.participants) == ["p0", "p1", "p2"]
    assert {reason: len(names) for reason, names in answers.skipped.items()} == {
        "from another study (page id)": 1, "tampered (unknown question or choice)": 1, "incomplete": 1,
        "duplicate participant": 1, "not a readable answers file": 1}
    flat = [row for run_rows in rows.values() for row in run_rows]
    metrics = {(row.variant, row.metric, row.condition) for row in flat}
    assert ("full", "preference", "vs nomask") in metrics and ("nomask", "preference", "vs full") in metrics
    assert {("full", "realism", "vs real"), ("full", "bt_score", "all pairs")} <= metrics
    preference = {(row.variant, row.condition): row for row in flat if row.metric == "preference"}
    a, b = preference["full", "vs nomask"], preference["nomask", "vs full"]
    assert a.value + b.value == pytest.approx(1) and a.n == b.n > 0
    assert a.ci_low <= a.value <= a.ci_high and "binomial p" in a.note and "5 skipped" not in a.note
    p_values = {(row.variant, row.condition): row.value for row in flat if row.metric == "preference_p_value"}
    won = round(a.value * a.n)
    assert p_values["full", "vs nomask"] == pytest.approx(binomial_p_value(won, a.n))
    odd = answers_file(folder, "odd")
    record = json.loads(odd.read_text())
    record["answers"][0]["question"] = ["not", "a", "string"]
    odd.write_text(json.dumps(record))
    deep = folder / "answers" / "deep.json"
    deep.write_text("[" * 100_000)
    _, more = analyze_study(folder, [*good, odd, deep])
    assert {reason: len(names) for reason, names in more.skipped.items()} == {
        "tampered (unknown question or choice)": 1, "not a readable answers file": 1}
    bad_key = folder.parent / "bad-key"
    bad_key.mkdir(exist_ok=True)
    (bad_key / KEY_FILE).write_text("[1, 2]")
    with pytest.raises(KpbenchError, match="is not a study key"):
        analyze_study(bad_key, good)
    with pytest.raises(KpbenchError, match="no usable answers .*1 from another study"):
        analyze_study(folder, [foreign])
    with pytest.raises(KpbenchError, match="no answers files given"):
        analyze_study(folder, [])


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium on this machine (apt-get install chromium) to run the study page in")


def test_the_page_in_a_real_browser_keyboard_reload_download_and_analyze(study: tuple[WorkDir, Path],
                                                                         tmp_path: Path) -> None:
    browser_path = _browser()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    workdir, folder = study
    key = json.loads((folder / KEY_FILE).read_text())
    total = len(key["questions"])
    pressed: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        page.goto((folder / "study.html").as_uri())
        payload = page.evaluate("JSON.parse(document.getElementById('study-data').textContent)")
        image_of = {src: image for question in payload["questions"]
                    for image, src in question["images"].items()}
        expected: list[str] = []  # what each key press chose, read from the images on screen

        def press(key_name: str) -> None:
            sources = page.eval_on_selector_all("#choices img", "images => images.map(image => image.src)")
            shown = [image_of.get(src) for src in sources]
            if len(shown) == 2:  # a pair: the image on the pressed side
                expected.append(shown[0] if key_name == "ArrowLeft" else shown[1])
            else:  # a patch question: left is yes
                expected.append("yes" if key_name == "ArrowLeft" else "no")
            page.keyboard.press(key_name)
            pressed.append(key_name)

        page.fill("#participant", "alice")
        page.press("#participant", "Enter")
        for k in range(3):
            assert page.inner_text("#progress") == f"{k + 1} of {total}"
            press("ArrowLeft" if k % 2 == 0 else "ArrowRight")
        page.reload()  # answers are kept in local storage
        page.fill("#participant", "alice")
        page.press("#participant", "Enter")
        assert page.inner_text("#progress") == f"4 of {total}"
        while len(pressed) < total:
            press("ArrowRight")
        assert page.is_visible("#done")
        with page.expect_download() as download_info:
            page.click("#download")
        saved = folder / "answers" / download_info.value.suggested_filename
        download_info.value.save_as(saved)
        browser.close()
    record = json.loads(saved.read_text())
    assert record["participant"] == "alice" and record["complete"] and len(record["answers"]) == total
    assert [answer["choice"] for answer in record["answers"]] == expected  # what was on screen
    result = CliRunner().invoke(app, ["study", "analyze", str(saved)])
    assert result.exit_code == 0, result.output
    assert "1 participants used" in result.stdout
    rows, answers = analyze_study(folder, [saved])
    assert answers.participants["alice"] == {a["question"]: a["choice"] for a in record["answers"]}
    assert all((run_dir / "results" / "user_study.csv").is_file() for run_dir in rows)
    # The report shows a user study section and judges the study claim from the rows.
    from kpbench.report import build_report

    report = build_report(workdir, "study", include_images=False)
    html = report.html.read_text()
    assert "<h2>User study</h2>" in html
    assert "Bradley-Terry score" in html and "People find the full model" in html


def test_analyze_on_the_command_line_fails_in_one_line_on_bad_input(study: tuple[WorkDir, Path],
                                                                   tmp_path: Path) -> None:
    _, folder = study
    # An empty answers folder: the shell passes the unexpanded pattern.
    result = CliRunner().invoke(app, ["study", "analyze", str(folder / "answers" / "nothing-*.json")])
    assert result.exit_code == 2 and "no usable answers" in result.output and "Traceback" not in result.output
    stray = tmp_path / "answers" / "a.json"
    stray.parent.mkdir()
    stray.write_text("{}")
    result = CliRunner().invoke(app, ["study", "analyze", str(stray)])  # no key.json above it
    assert result.exit_code == 2 and "is not a study key" in result.output
