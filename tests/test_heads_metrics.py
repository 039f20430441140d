"""The MUSIC-AVQA per-type table and clip metrics on hand-made predictions."""

from __future__ import annotations

import pytest

from featpipe.heads.metrics import TABLE_KEYS, avqa_table, classification_metrics, format_avqa_tables

# (group, type, correct): Audio Counting 2/3, Audio Comparative 0/1, Visual Location 1/2,
# AV Temporal 4/4; no Visual Counting or other AV questions.
HAND = ([("Audio", "Counting", True)] * 2 + [("Audio", "Counting", False)]
        + [("Audio", "Comparative", False)]
        + [("Visual", "Location", True), ("Visual", "Location", False)]
        + [("Audio-Visual", "Temporal", True)] * 4)


def _table():
    groups, types, correct = zip(*HAND)
    return avqa_table(groups, types, correct)


def test_per_type_and_averages_over_questions():
    t = _table()
    assert list(t) == list(TABLE_KEYS) and len(t) == 13
    assert t["Audio/Counting"] == {"accuracy": 2 / 3, "correct": 2, "n": 3}
    assert t["Audio/Comparative"] == {"accuracy": 0.0, "correct": 0, "n": 1}
    assert t["Visual/Location"]["accuracy"] == 0.5
    assert t["Audio-Visual/Temporal"]["accuracy"] == 1.0
    assert t["Visual/Counting"] == {"accuracy": None, "correct": 0, "n": 0}
    # Group averages pool the group's questions: Audio is 2/4 = 50%, not mean(66.7, 0) = 33.3%.
    assert t["Audio"]["accuracy"] == 0.5
    assert t["Visual"]["accuracy"] == 0.5
    assert t["Audio-Visual"] == {"accuracy": 1.0, "correct": 4, "n": 4}
    assert t["All"] == {"accuracy": 7 / 10, "correct": 7, "n": 10}


def test_formatted_table_layout():
    text = format_avqa_tables({"head": _table()})
    lines = text.splitlines()
    assert "Audio (A)" in lines[0] and "Visual (V)" in lines[0] and "Audio-Visual (AV)" in lines[0]
    assert lines[1].split() == ["method", "|", "Count", "Comp", "Avg", "|", "Count", "Loc", "Avg", "|", "Exist",
                                "Count", "Loc", "Comp", "Temp", "Avg", "|", "All"]
    cells = lines[3].replace("|", " ").split()
    assert cells == ["head", "66.67", "0.00", "50.00", "-", "50.00", "50.00", "-", "-", "-", "-", "100.00",
                     "100.00", "70.00"]


def test_unknown_type_and_length_mismatch_raise():
    with pytest.raises(ValueError, match="unknown question type"):
        avqa_table(["Audio"], ["Location"], [True])
    with pytest.raises(ValueError, match="same length"):
        avqa_table(["Audio"], ["Counting"], [True, False])


def test_classification_metrics_by_hand():
    # labels a, b, c; truth a a b b c; predicted a b b b a
    m = classification_metrics(["a", "b", "c"], [0, 0, 1, 1, 2], [0, 1, 1, 1, 0])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["a"]["accuracy"] == 0.5 and m["per_class"]["b"]["accuracy"] == 1.0
    assert m["per_class"]["c"]["accuracy"] == 0.0
    # F1: a = 2*1/(2+2) = 0.5, b = 2*2/(2+3) = 0.8, c = 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
