"""`featpipe study` end to end on a `featpipe synth` set (tests/study_data.py): through the CLI, on
a LocalCluster, every reported number recomputed from the prediction files."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from study_data import LAYERS, synth_study_set

from featpipe.avqa import load_questions
from featpipe.avqa_sets import load_any
from featpipe import open_cache
from featpipe.cli import main
from featpipe.heads.stats import CELLS

ARMS = ["--arm", "noise1=noise", "--arm", "noise2=noise", "--arm", "truth=truth", "--arm", "deep=deep"]
FAST = ["--set", "max_epochs=8", "--set", "batch_size=64", "--quiet"]


def _args(files: dict, out: Path, *extra: str) -> list[str]:
    tests = ["--test", str(files["test"])] + (["--test", str(files["r_head"])] if "r_head" in files else [])
    cmd = ["study", str(files["cache"]), "--train", str(files["train"]), "--val", str(files["val"]), *tests]
    return [*cmd, *ARMS, "--seeds", "3", *FAST, "-o", str(out), *extra]


def r_head_file(test: Path, out: Path, n: int = 80) -> Path:
    """The first ``n`` test questions in MUSIC-AVQA-R's layout (type as a Python literal, no question id)."""
    entries = json.loads(test.read_text())[:n]
    keep = ("video_id", "question_content", "templ_values", "anser")
    rows = [{**{k: e[k] for k in keep}, "type": str(json.loads(e["type"]))} for e in entries]
    path = out / "avqa-test-head.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    files = synth_study_set(tmp / "set", videos=150, seed=3)
    files["r_head"] = r_head_file(files["test"], tmp)
    r = CliRunner().invoke(main, _args(files, tmp / "out"))
    assert r.exit_code == 0, r.output
    return files, tmp / "out", r.output


def test_outputs_and_table_layout(study):
    files, out, output = study
    assert {p.name for p in out.iterdir()} >= {
        "plan.json",
        "runs",
        "predictions.jsonl",
        "study.json",
        "study.md",
        "study.png",
        "study.html",
    }
    s = json.loads((out / "study.json").read_text())
    assert [a["name"] for a in s["arms"]] == ["noise1", "noise2", "truth", "deep"] and s["baseline"] == "noise1"
    assert s["seeds"] == [0, 1, 2] and s["hparams"]["head"]["max_epochs"] == 8 and s["hparams"]["mirror"] is False
    assert set(s["features"]) == {"noise", "truth", "deep"} and len(s["features"]["deep"]["fingerprint"]) == 16
    assert s["features"]["deep"]["layers"] == LAYERS
    assert list(s["tests"]) == ["MUSIC-AVQA test", "MUSIC-AVQA-R test (head)"]
    assert s["tests"]["MUSIC-AVQA-R test (head)"]["n_questions"] == 80
    md = (out / "study.md").read_text()
    assert (
        "| arm | A Count | A Comp | A Avg | V Count | V Loc | V Avg | AV Exist | AV Count | AV Loc | AV Comp | "
        "AV Temp | AV Avg | All |" in md
    )
    assert "| question-only |" in md and "MUSIC-AVQA test" in output
    assert (out / "study.png").read_bytes()[:4] == b"\x89PNG"
    lines = (out / "predictions.jsonl").read_text().splitlines()
    n_test = len(load_questions(files["test"])) + 80  # R's ids are derived: its questions are predicted as its own
    assert len(lines) == 5 * 3 * n_test and set(json.loads(lines[0])) == {"arm", "seed", "question_id", "answer"}


def test_every_accuracy_recomputed_from_the_prediction_files(study):
    files, out, _ = study
    s = json.loads((out / "study.json").read_text())
    preds: dict[tuple[str, int], dict[int, str]] = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        r = json.loads(line)
        preds.setdefault((r["arm"], r["seed"]), {})[r["question_id"]] = r["answer"]
    for label, path in (("MUSIC-AVQA test", files["test"]), ("MUSIC-AVQA-R test (head)", files["r_head"])):
        _recompute(s, s["tests"][label], {q.question_id: q for q in load_any(path)}, preds)


def _recompute(s: dict, t: dict, truth: dict, preds: dict) -> None:
    for arm, cells in t["arms"].items():
        for cell in CELLS:

            def inside(q):
                return cell == "All" or cell == q.group or cell == f"{q.group}/{q.qtype}"

            qs = [q for q in truth.values() if inside(q)]
            if not qs:
                assert cells[cell]["accuracy"] is None and cells[cell]["n"] == 0
                continue
            per_seed = [np.mean([preds[(arm, sd)][q.question_id] == q.answer for q in qs]) for sd in s["seeds"]]
            assert cells[cell]["n"] == len(qs)
            assert cells[cell]["per_seed"] == pytest.approx(per_seed, abs=1e-12)
            assert cells[cell]["accuracy"] == pytest.approx(np.mean(per_seed), abs=1e-12)
            lo, hi = cells[cell]["interval"]
            assert lo <= cells[cell]["accuracy"] <= hi
    for arm, cells in t["vs_baseline"].items():
        assert cells["All"]["difference"] == pytest.approx(
            t["arms"][arm]["All"]["accuracy"] - t["arms"]["noise1"]["All"]["accuracy"], abs=1e-12
        )


def test_identical_arms_identical_results_and_the_answer_carrying_arm_significant(study):
    files, out, _ = study
    for sd in range(3):
        a = (out / "runs" / "noise1" / f"seed-{sd}.jsonl").read_text().replace('"arm": "noise1"', '"arm": "X"')
        b = (out / "runs" / "noise2" / f"seed-{sd}.jsonl").read_text().replace('"arm": "noise2"', '"arm": "X"')
        assert a == b
    t = json.loads((out / "study.json").read_text())["tests"]["MUSIC-AVQA test"]
    assert t["arms"]["noise1"] == t["arms"]["noise2"]
    for cell in CELLS:
        same = t["vs_baseline"]["noise2"][cell]
        assert same["difference"] == 0.0 and same["interval"] == [0.0, 0.0] and same["p"] == 1.0
        assert not same["significant"]
    truth = t["vs_baseline"]["truth"]
    assert truth["Visual/Location"]["significant"] and truth["Visual/Location"]["difference"] > 0.15
    assert truth["All"]["difference"] > 0.04
    md = (out / "study.md").read_text()
    assert any(line.startswith("| truth |") and " *" in line for line in md.splitlines())


def test_layer_weights_learned_and_reported(study):
    _, out, _ = study
    s = json.loads((out / "study.json").read_text())
    w = s["layer_weights"]["deep"]["deep"]
    assert w["layers"] == LAYERS and len(w["per_seed"]) == 3
    assert all(abs(sum(x) - 1) < 1e-5 for x in w["per_seed"])
    assert LAYERS[int(np.argmax(w["mean"]))] == 6  # the layer that carries the scene
    assert "deep / deep: L0:" in (out / "study.md").read_text()


def test_html_is_self_contained(study):
    _, out, _ = study
    page = (out / "study.html").read_text()
    assert "<table>" in page and 'src="data:image/png;base64,' in page and "http" not in page.split("<body>")[1]
    b64 = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(b64) == (out / "study.png").read_bytes()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_opens_in_a_headless_browser(study, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (apt-get install -y chromium)")
    _, out, _ = study
    r = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'p'}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            (out / "study.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = r.stdout
    assert "<table>" in dom and "truth" in dom and "question-only" in dom, r.stderr[-2000:]
    width = dom.split('data-width="')[1].split('"')[0]  # set by the img's onload: the PNG decoded
    assert int(width) > 500


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--arm", "mert=mert"], "arm 'mert': the cache has no feature 'mert'"),
        (["--arm", "../x=noise"], "an arm name is letters"),
        (["--arm", "d3=deep@4"], "'deep' has layers [0, 3, 6, 9]"),
        (["--arm", "n4=noise@2"], "'noise' is not layer-wise"),
        (["--seeds", "2"], "needs at least 3"),
        (["--set", "nope=1"], "unknown hyperparameter 'nope'"),
    ],
)
def test_bad_input_is_one_line(study, tmp_path, extra, match):
    files, _, _ = study
    r = CliRunner().invoke(main, _args(files, tmp_path / "o", *extra))
    assert r.exit_code == 2 and match in r.output and len(r.output.strip().splitlines()) == 1, r.output
    if "mert" in extra[-1]:
        assert f"featpipe extract VIDEOS {files['cache']} --audio mert" in r.output


def test_empty_split_and_another_study_in_out(study, tmp_path):
    files, out, _ = study
    empty = tmp_path / "avqa-val.json"
    empty.write_text("[]")
    args = _args(files, tmp_path / "o")
    args[args.index("--val") + 1] = str(empty)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "has no questions" in r.output
    r = CliRunner().invoke(main, _args(files, out, "--baseline", "truth"))
    assert r.exit_code == 2 and "holds another study (it differs in arms" not in r.output
    assert "holds another study" in r.output and "baseline" in r.output


def test_resume_after_kill_redoes_no_finished_run(tmp_path):
    files = synth_study_set(tmp_path / "set", videos=60, seed=5)
    out = tmp_path / "out"
    args = [sys.executable, "-c", "from featpipe.cli import main; main()", *_args(files, out)]
    args[args.index("max_epochs=8")] = "max_epochs=12"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("runs/*/*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its Dask workers, as a crash or kill -9 would
    proc.wait()
    done = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("runs/*/*.json*")}
    records = [p for p in done if p.suffix == ".json"]
    assert 1 <= len(records) < 15 and not list(out.glob("study.json"))
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"{len(records)} of 15 runs already done" in r.stdout
    for p, (mtime, data) in done.items():
        if p.suffix == ".json" or p.with_suffix(".json") in done:  # finished runs are untouched
            assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data
    assert len(list(out.glob("runs/*/*.json"))) == 15 and (out / "study.json").exists()


def test_runs_are_submitted_widest_arm_first(study, tmp_path, monkeypatch):
    """The runs go to the workers widest arm first (arm after arm, seeds in order), the
    question-only runs last: the study ends on short runs, not one long run holding a worker
    while the other idles. Submission order only: every run's result depends on its seed alone."""
    from featpipe.heads import study as study_mod
    from featpipe.heads.arms import input_width, parse_arm
    from featpipe.heads.data import FeatureMeta

    metas = {
        "vggish": FeatureMeta("vggish", "audio", (128,), {}),
        "clip": FeatureMeta("clip", "visual", (768,), {}),
        "mert": FeatureMeta("mert", "audio", (13, 768), {}, layers=tuple(range(13))),
    }
    widths = {t: input_width(parse_arm(t), metas) for t in ("a=vggish", "b=vggish,clip", "c=mert", "d=mert@3")}
    assert widths == {"a=vggish": 128, "b=vggish,clip": 896, "c=mert": 13 * 768, "d=mert@3": 768}

    seen = []

    def record(pending, *args):
        seen.extend(pending)
        raise SystemExit(3)

    monkeypatch.setattr(study_mod, "execute", record)
    files = study[0]
    r = CliRunner().invoke(main, _args(files, tmp_path / "out"))
    assert r.exit_code == 3
    arms = [a for a, _ in seen]
    width = {a: 0 for a in arms}
    with open_cache(str(files["cache"])) as cache:
        for a, feat in (("noise1", "noise"), ("noise2", "noise"), ("truth", "truth"), ("deep", "deep")):
            width[a] = int(np.prod(cache.info(feat).shape))
    assert [width[a] for a in arms] == sorted((width[a] for a in arms), reverse=True)
    assert arms[-3:] == ["question-only"] * 3 and len(seen) == 15
    assert [s for a, s in seen if a == arms[0]] == [0, 1, 2]


def test_runs_start_in_the_planned_order(study):
    """Each worker takes the next run of the plan (widest arm first) as it finishes one: a run
    starts after every run planned two or more places before it (2 workers). Dask alone does not
    keep the order: an idle worker steals from the end of the other's queue, and at full scale the
    question-only runs, planned last, ran second."""
    files, out, _ = study
    records = [json.loads(p.read_text()) for p in out.glob("runs/*/seed-*.json")]
    assert len(records) == 15
    width = {"question-only": 0}
    with open_cache(str(files["cache"])) as cache:
        for a, feat in (("noise1", "noise"), ("noise2", "noise"), ("truth", "truth"), ("deep", "deep")):
            width[a] = int(np.prod(cache.info(feat).shape))
    arms = ["question-only", "noise1", "noise2", "truth", "deep"]
    plan = sorted([(a, s) for a in arms for s in range(3)], key=lambda r: -width[r[0]])
    started = {(r["arm"], r["seed"]): r["started"] for r in records}
    late = [(plan[i], plan[j]) for i in range(15) for j in range(i + 2, 15) if started[plan[j]] < started[plan[i]]]
    assert not late, f"runs started before runs planned earlier: {late[:3]}"
