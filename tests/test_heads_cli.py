"""featpipe train-head / evaluate / predict, and run_avqa_experiment (the demo's entry point)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_heads_support import planted_avqa, planted_clips

from featpipe.cli import main
from featpipe.heads.api import run_avqa_experiment
from featpipe.heads.metrics import TABLE_KEYS


def test_cli_avqa_train_evaluate_predict(tmp_path):
    files = planted_avqa(tmp_path, n_videos=40)
    run = CliRunner().invoke
    head = tmp_path / "head"
    r = run(main, ["train-head", str(files["cache"]), "--task", "avqa", "--train", str(files["train"]), "--val",
                   str(files["val"]), "--features", "aud,vis", "--epochs", "3", "-o", str(head), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "avqa-head: kept epoch" in r.output and "question-only: kept epoch" in r.output
    r = run(main, ["evaluate", str(head), str(files["cache"]), "--test", str(files["test"]),
                   "--report", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")])
    assert r.exit_code == 0, r.output
    assert "Audio-Visual (AV)" in r.output and "question-only" in r.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["tables"]["avqa-head"]) == list(TABLE_KEYS)
    assert (tmp_path / "r.png").stat().st_size > 0
    r = run(main, ["predict", str(head), str(files["cache"]), "--questions", str(files["test"]),
                   "-o", str(tmp_path / "p.jsonl")])
    assert r.exit_code == 0 and "wrote 16 predictions" in r.output
    line = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])
    assert set(line) == {"question_id", "video_id", "answer", "probability"}
    r = run(main, ["predict", str(head), str(files["cache"]), "--videos", str(files["test"]), "-o", "x.jsonl"])
    assert r.exit_code == 2 and "give questions, not videos" in r.output


def test_cli_classify_and_errors(tmp_path):
    files = planted_clips(tmp_path, n_videos=40)
    run = CliRunner().invoke
    r = run(main, ["train-head", str(files["cache"]), "--task", "classify", "--model", "linear", "--train",
                   str(files["train"]), "-o", str(tmp_path / "h"), "--quiet"])
    assert r.exit_code == 0, r.output
    r = run(main, ["evaluate", str(tmp_path / "h"), str(files["cache"]), "--test", str(files["test"])])
    assert r.exit_code == 0 and "accuracy" in r.output and "macro-F1" in r.output
    r = run(main, ["train-head", str(files["cache"]), "--task", "classify", "--train", str(files["train"]),
                   "--features", "nope", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "feature 'nope' is not in the cache" in r.output


def test_run_avqa_experiment_prints_and_writes(tmp_path):
    files = planted_avqa(tmp_path, n_videos=40)
    lines = []
    result = run_avqa_experiment(files["cache"], files["train"], files["val"], files["test"], tmp_path / "out",
                                 hparams={"max_epochs": 2}, echo=lines.append)
    assert set(result["tables"]) == {"avqa-head", "question-only"}
    assert "avqa-head" in lines[0] and "over all questions of the group" in lines[1]
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"head", "report.json", "report.png"}
    assert (tmp_path / "out" / "head" / "baseline" / "head.json").exists()
