"""MUSIC-AVQA v2.0 and -R question files (excerpts in tests/data, licence beside them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from featpipe.avqa import DERIVED_ID_BASE, AvqaFormatError, derived_id, load_questions, write_questions
from featpipe.avqa_sets import identify, load_any, load_r_questions

DATA = Path(__file__).parent / "data"
V2 = {k: DATA / f"music-avqa-v2.0-test_{k}-excerpt.json" for k in ("balance", "bias")}


@pytest.mark.parametrize("kind", ["balance", "bias"])
def test_v2_excerpt_loads_whole_with_ids_extras_and_flips(kind, tmp_path):
    raw = json.loads(V2[kind].read_text())
    qs = load_questions(V2[kind])
    assert len(qs) == len(raw)  # nothing refused, nothing deleted in these entries
    for e, q in zip(raw, qs):
        if e.get("question_id") is None:
            assert q.question_id == derived_id(
                e["video_id"],
                e["question_content"],
                json.loads(e["templ_values"]) if isinstance(e["templ_values"], str) else e["templ_values"],
            )
            assert q.question_id >= DERIVED_ID_BASE
        else:
            assert q.question_id == e["question_id"]
        assert q.extra == {
            k: v
            for k, v in e.items()
            if k
            not in ("video_id", "question_id", "type", "question_content", "templ_values", "question_deleted", "anser")
        }
    assert any("unmatch_audio" in q.extra for q in qs) and any(q.video_id.endswith("_flip") for q in qs)
    flips = {q.video_id for q in qs if q.video_id.endswith("_flip")}
    assert all(v[:-5] not in flips for v in flips)  # a flip is a video id of its own
    assert len({q.question_id for q in qs}) == len(qs)
    # ids do not depend on the entry's position: reversed file, same ids
    rev = tmp_path / "rev.json"
    rev.write_text(json.dumps(raw[::-1]))
    assert {q.question_id for q in load_questions(rev)} == {q.question_id for q in qs}
    # written back, extra keys survive and the ids are now explicit
    out = tmp_path / "back.json"
    write_questions(out, qs)
    again = load_questions(out)
    assert [q.question_id for q in again] == [q.question_id for q in qs] and [q.extra for q in again] == [
        q.extra for q in qs
    ]


def test_repeated_question_without_id_gets_distinct_stable_ids(tmp_path):
    e = {
        "video_id": "v1",
        "type": '["Audio", "Counting"]',
        "question_content": "Is there a <Object> sound?",
        "templ_values": '["drum"]',
        "anser": "yes",
    }
    p = tmp_path / "q.json"
    p.write_text(json.dumps([e, e]))
    a, b = load_questions(p)
    assert a.question_id == derived_id("v1", e["question_content"], ["drum"], 0)
    assert b.question_id == derived_id("v1", e["question_content"], ["drum"], 1) != a.question_id


def test_identify_names_dataset_and_split(tmp_path):
    assert identify("x/avqa-test.json") == {"dataset": "MUSIC-AVQA", "split": "test"}
    assert identify("d/test_balance.json") == {"dataset": "MUSIC-AVQA v2.0", "split": "test (balanced set)"}
    assert identify("d/train_bias.json") == {"dataset": "MUSIC-AVQA v2.0", "split": "train (biased set)"}
    assert identify("avqa-test-tail.json") == {"dataset": "MUSIC-AVQA-R", "split": "test (tail)"}
    assert identify("mine.json")["dataset"] == "unknown"
    named = tmp_path / "test_bias.json"
    shutil.copy(V2["bias"], named)
    assert len(load_any(named)) == len(json.loads(V2["bias"].read_text()))


def _r_entries():
    # MUSIC-AVQA-R's layout as its dataloader reads it (reml-group/MUSIC-AVQA-R dataset/avqa_dataset.py):
    # the rephrased question with <slot> words, the values, the type as a literal list, the answer.
    return [
        {
            "video_id": "00000001",
            "question_id": 12,
            "type": "['Audio', 'Counting']",
            "question_content": "Does the <Object> ever stop making sound?",
            "templ_values": '["cello"]',
            "anser": "no",
        },
        {
            "video_id": "00000001",
            "question_id": 12,
            "type": '["Audio", "Counting"]',
            "question_content": "Is the sound of the <Object> continuous?",
            "templ_values": "['cello']",
            "anser": "no",
        },
        {
            "video_id": "00000002",
            "type": '["Audio-Visual", "Location"]',
            "question_content": "Where is the loudest instrument?",
            "templ_values": "[]",
            "anser": "left",
        },
        {
            "video_id": "00000003",
            "type": '["Visual", "Counting"]',
            "question_content": "How many instruments are there in the video?",
            "anser": "two",
        },
    ]


def test_r_file_read_as_its_dataloader_does(tmp_path):
    p = tmp_path / "avqa-test-head.json"
    p.write_text(json.dumps(_r_entries()))
    qs = load_any(p)
    assert [q.text for q in qs] == [
        "Does the cello ever stop making sound?",
        "Is the sound of the cello continuous?",
        "Where is the loudest instrument?",
        "How many instruments are there in the video?",
    ]
    assert qs[0].question_id != qs[1].question_id  # two rephrasings of question 12: two questions
    assert qs[0].extra == {"question_id": 12} and (qs[0].group, qs[0].qtype) == ("Audio", "Counting")
    assert identify(p)["split"] == "test (head)"
    bad = tmp_path / "avqa-test-tail.json"
    bad.write_text(json.dumps([dict(_r_entries()[0], templ_values="[]")]))
    with pytest.raises(AvqaFormatError, match="entry 0: 1 slot word"):
        load_r_questions(bad)
    # a rephrasing that dropped a slot word: its dataloader uses the values in order, ignores the rest
    dropped = tmp_path / "avqa-test-headtail.json"
    dropped.write_text(json.dumps([dict(_r_entries()[0], templ_values='["cello", "piano"]')]))
    (q,) = load_any(dropped)
    assert q.text == "Does the cello ever stop making sound?" and q.values == ("cello",)


def test_evaluate_names_the_dataset_and_split(tmp_path):
    from click.testing import CliRunner
    from test_heads_support import planted_avqa

    from featpipe.cli import main

    files = planted_avqa(tmp_path, n_videos=30)
    head, named = tmp_path / "head", tmp_path / "avqa-test.json"
    shutil.copy(files["test"], named)
    run = CliRunner().invoke
    r = run(
        main,
        [
            "train-head",
            str(files["cache"]),
            "--task",
            "avqa",
            "--train",
            str(files["train"]),
            "--val",
            str(files["val"]),
            "--epochs",
            "1",
            "-o",
            str(head),
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    r = run(
        main, ["evaluate", str(head), str(files["cache"]), "--test", str(named), "--report", str(tmp_path / "r.json")]
    )
    assert r.exit_code == 0 and r.output.startswith(f"MUSIC-AVQA, test ({named})"), r.output
    assert json.loads((tmp_path / "r.json").read_text())["dataset"] == {"dataset": "MUSIC-AVQA", "split": "test"}
