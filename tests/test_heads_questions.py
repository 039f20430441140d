"""Question encoding, answer vocabulary, and the question-only baseline on the real val/test files."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from avqa_data import real_file

from featpipe.avqa import QUESTION_TYPES, Question, load_questions
from featpipe.heads import api
from featpipe.heads.metrics import TYPE_KEYS
from featpipe.heads.questions import BowQuestionEncoder, answer_vocabulary

VAL, TEST = real_file("avqa-val.json"), real_file("avqa-test.json")

CMP = "Is the <Object> louder than the <Object>?"


def _q(qid, template, values, answer="yes", group="Audio", qtype="Comparative"):
    text = template
    for v in values:
        text = text.replace("<Object>", v, 1)
    return Question(qid, "00000001", template, text, tuple(values), group, qtype, answer)


def test_bow_encoding_blocks_and_slot_order():
    train = [_q(0, CMP, ["violin", "piano"]), _q(1, "Is there a <Object>?", ["flute"], "no", "Audio-Visual",
                                                   "Existential")]
    enc = BowQuestionEncoder.fit(train)
    assert enc.templates == sorted([CMP, "Is there a <Object>?"])
    assert "0:<Object>=violin" in enc.slots and "1:<Object>=piano" in enc.slots
    a, b = enc.encode([_q(2, CMP, ["violin", "piano"]), _q(3, CMP, ["piano", "violin"])])
    # same words, but the positional slot block tells which object is compared with which
    w = len(enc.words)
    assert (a[:w] == b[:w]).all() and not (a == b).all()
    assert a.sum() == len(set("is the violin louder than piano".split())) + 1 + 2 + 2  # words, template, slots x2
    # unseen words, templates and values add nothing
    (u,) = enc.encode([_q(4, "Which <Object> is tuba?", ["cello"])])
    assert u[enc._w["is"]] == 1 and u.sum() == 1
    again = BowQuestionEncoder.from_json(json.loads(json.dumps(enc.to_json())))
    assert (again.encode(train) == enc.encode(train)).all()


def test_real_val_and_test_give_41_answers():
    val, test = load_questions(VAL), load_questions(TEST)
    assert (len(val), len(test)) == (4568, 9129)
    vocab = answer_vocabulary(val + test)
    assert len(vocab) == 41 and "ten" not in vocab
    assert {(q.group, q.qtype) for q in test} == set(QUESTION_TYPES)


def test_question_only_baseline_val_to_test(tmp_path, capsys):
    """Trained on the real val file (no cache: bag of words), scored on the real test file."""
    hist = api.train_head(None, "avqa", VAL, None, None, tmp_path / "qo", seed=0, hparams={"max_epochs": 15})
    assert list(hist) == ["question-only"]
    result = api.evaluate(tmp_path / "qo", None, TEST, report=tmp_path / "r.json", plot=tmp_path / "r.png")
    table = result["tables"]["question-only"]
    assert table["All"]["n"] == 9129 and all(table[k]["n"] > 0 for k in TYPE_KEYS)
    majority = Counter(q.answer for q in load_questions(TEST)).most_common(1)[0][1] / 9129
    assert majority < table["All"]["accuracy"] < 0.75  # it learns the question priors, it cannot see
    assert json.loads((tmp_path / "r.json").read_text())["tables"]["question-only"]["All"]["n"] == 9129
    assert (tmp_path / "r.png").stat().st_size > 10_000
    with capsys.disabled():
        print("\nquestion-only, trained on val, tested on test (%):\n" + result["table_text"])
    acc = np.array([table[k]["accuracy"] for k in TYPE_KEYS])
    assert ((acc > 0) & (acc < 1)).all()
