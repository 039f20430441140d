"""featpipe.avqa against the real MUSIC-AVQA val/test question files (tests/data/music-avqa)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from featpipe.avqa import (
    GROUPS,
    QUESTION_TYPES,
    AvqaFormatError,
    Question,
    fill_template,
    load_questions,
    question_to_json,
    write_questions,
)
from avqa_data import real_file

VAL, TEST = real_file("avqa-val.json"), real_file("avqa-test.json")


@pytest.fixture(scope="module")
def real() -> dict[str, list[Question]]:
    return {"val": load_questions(VAL), "test": load_questions(TEST)}


def test_counts_answers_templates_types(real):
    assert len(real["val"]) == 4568
    assert len(real["test"]) == 9129
    both = real["val"] + real["test"]
    assert len({q.answer for q in both}) == 41
    assert "ten" not in {q.answer for q in both}
    assert len({q.template for q in both}) == 33
    assert {(q.group, q.qtype) for q in both} == set(QUESTION_TYPES)
    assert {q.group for q in both} == set(GROUPS)
    assert len({q.question_id for q in both}) == len(both)


def test_filled_text_has_no_slot_left(real):
    for q in real["val"] + real["test"]:
        assert "<" not in q.text and ">" not in q.text, q
        for v in q.values:
            assert v in q.text


def test_first_entry_parsed(real):
    q = real["val"][0]
    assert q == Question(question_id=7, video_id="00000028",
                         template="Is the <Object> in the video always playing?",
                         text="Is the ukulele in the video always playing?", values=("ukulele",),
                         group="Audio-Visual", qtype="Existential", answer="yes")


@pytest.mark.parametrize("name", ["avqa-val.json", "avqa-test.json"])
def test_round_trip_is_byte_exact(real, tmp_path, name):
    qs = real["val" if "val" in name else "test"]
    out = tmp_path / name
    write_questions(out, qs)
    assert out.read_bytes() == real_file(name).read_bytes()
    assert load_questions(out) == qs


def test_fill_template_keeps_spacing_and_order():
    assert fill_template("Is the <Object> on the <LR> louder than the <Object> on the <LR>?",
                         ["flute", "left", "cello", "right"]) == \
        "Is the flute on the left louder than the cello on the right?"
    assert fill_template("Are there <Object> and <Object> sound? ", ["a", "b"]) == \
        "Are there a and b sound? "
    assert fill_template("How many sounding <Object> in the video\uff1f", ["erhu"]) == \
        "How many sounding erhu in the video\uff1f"
    assert fill_template("What kind of instrument is the <LRer> instrument? ", ["leftest"]) == \
        "What kind of instrument is the leftest instrument? "
    with pytest.raises(ValueError, match="2 slot"):
        fill_template("Is the <Object> louder than the <Object>?", ["piano"])


def test_question_to_json_seven_keys():
    q = Question(3, "00000001", "Where is the <LL> instrument?", "Where is the loudest instrument?",
                 ("loudest",), "Audio-Visual", "Location", "left")
    d = question_to_json(q)
    assert list(d) == ["video_id", "question_id", "type", "question_content", "templ_values",
                       "question_deleted", "anser"]
    assert d["type"] == '["Audio-Visual", "Location"]'
    assert d["templ_values"] == '["loudest"]'


def _entry(**over):
    e = {"video_id": "00000001", "question_id": 5, "type": '["Audio", "Counting"]',
         "question_content": "Is there a <Object> sound?", "templ_values": '["drum"]',
         "question_deleted": 0, "anser": "yes"}
    e.update(over)
    return e


@pytest.mark.parametrize("entry,match", [
    ({k: v for k, v in _entry().items() if k != "templ_values"}, "missing key"),
    (_entry(type="Audio Counting"), "not a JSON-encoded list"),
    (_entry(type='["Audio", "Temporal"]'), "unknown question type"),
    (_entry(templ_values='["drum", "piano"]'), "1 slot"),
    (_entry(question_id="5"), "question_id must be an integer"),
    (_entry(anser=3), "'anser' must be"),
    ([1, 2], "expected a JSON object"),
])
def test_malformed_entry_names_file_and_entry(tmp_path, entry, match):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps([_entry(question_id=1), entry]))
    with pytest.raises(AvqaFormatError, match=match) as info:
        load_questions(p)
    msg = str(info.value)
    assert "bad.json: entry 1" in msg and "\n" not in msg


def test_malformed_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(AvqaFormatError, match="x.json: not valid JSON"):
        load_questions(p)
    p.write_text('{"a": 1}')
    with pytest.raises(AvqaFormatError, match="expected a JSON list"):
        load_questions(p)
    with pytest.raises(AvqaFormatError, match="cannot read"):
        load_questions(tmp_path / "missing.json")


def test_deleted_skipped_and_missing_answer(tmp_path):
    p = tmp_path / "q.json"
    p.write_text(json.dumps([_entry(question_id=1, question_deleted=1),
                             {k: v for k, v in _entry(question_id=2).items() if k != "anser"}]))
    qs = load_questions(p)
    assert [q.question_id for q in qs] == [2]
    assert qs[0].answer is None
    assert Counter(q.text for q in qs) == {"Is there a drum sound?": 1}
