"""The spatial AVQA head: feature layouts, left-right mirrors of features and questions, and a
planted cache whose answers need the grid cell the question's <LR> slot names."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_heads_support import prov, write_cache

from featpipe.avqa import Question, load_questions, write_questions
from featpipe.extractors.base import OutputSpec
from featpipe.heads import api
from featpipe.heads.checkpoint import load as load_checkpoint
from featpipe.heads.data import HeadError
from featpipe.heads.layout import mirror_rows, read_layout, stream_layout
from featpipe.heads.questions import BowQuestionEncoder, mirror_question

G, T = 2, 4
MOTION_LAYOUT = [["motion", 0, 4], ["L_mean", 4, 8], ["motion_mean", 8, 9]]
PRIORS_LAYOUT = [["rms_db", 0, 1], ["ild_db", 1, 3], ["ild_overall_db", 3, 4]]
ILD_SIGN = "positive = louder in the left channel"
TEMPLATE = "Is the instrument on the <LR> playing?"


def _info(spec: str, shape: tuple, layout: list, **attrs) -> SimpleNamespace:
    return SimpleNamespace(spec=spec, shape=shape, attrs={"layout": json.dumps(layout), **attrs})


def test_layouts_and_mirrors():
    motion = read_layout(_info("motion", (9,), MOTION_LAYOUT, grid=G))
    priors = read_layout(_info("priors", (4,), PRIORS_LAYOUT, ild_sign=ILD_SIGN))
    assert motion.cell_blocks == [0, 4] and motion.grid == 2 and priors.ild_dims == [1, 2, 3]
    assert priors.ild_sign == 1 and read_layout(_info("x", (4,), PRIORS_LAYOUT, ild_sign="positive = louder "
                                                      "in the right channel")).ild_sign == -1
    perm, sign = motion.mirror()
    # cells are row-major from the top left: columns swap within each row, whole-frame values stay
    assert perm.tolist() == [1, 0, 3, 2, 5, 4, 7, 6, 8] and (sign == 1).all()
    assert priors.mirror()[1].tolist() == [1, -1, -1, -1]
    assert read_layout(_info("clip", (4,), PRIORS_LAYOUT)).mirror() is None  # unknown feature: no mirror
    assert read_layout(SimpleNamespace(spec="motion", shape=(9,), attrs={"layout": "not json"})).blocks == ()
    lay = stream_layout([priors], [motion])
    assert lay.spatial and lay.mirrorable and lay.cells == [0, 4] and lay.ild == [1, 2, 3]
    x = np.arange(2 * 9, dtype=np.float32).reshape(2, 9)
    assert (mirror_rows(mirror_rows(x, lay.mirror_v), lay.mirror_v) == x).all()
    assert not stream_layout([priors], [motion, read_layout(_info("clip", (4,), []))]).mirrorable


def _q(qid: int, side: str, answer: str, template: str = TEMPLATE) -> Question:
    return Question(qid, f"{qid:08d}", template, template.replace("<LR>", side), (side,), "Audio-Visual",
                    "Location", answer)


def test_mirror_question_and_named_slots():
    m = mirror_question(_q(1, "left", "yes"))
    assert m.values == ("right",) and m.text == "Is the instrument on the right playing?" and m.answer == "yes"
    w = mirror_question(Question(2, "v", "Which is the <LRer> instrument?", "Which is the leftest instrument?",
                                 ("leftest",), "Visual", "Location", "left"))
    assert w.values == ("rightest",) and w.answer == "right"
    assert mirror_question(_q(3, "left", "yes", "Is the left <LR> one playing?")) is None  # side in the template
    cmp1 = Question(4, "v", "Is the <Object> on the <LR> louder than the <Object> on the <LR>?", "",
                    ("violin", "left", "piano", "right"), "Audio-Visual", "Comparative", "yes")
    cmp2 = Question(5, "v", "Is the instrument on the <LR> louder than the instrument on the <LR>?", "",
                    ("left", "right"), "Audio-Visual", "Comparative", "no")
    enc = BowQuestionEncoder.fit([cmp1, cmp2])
    # the first <LR> of both templates shares one dimension (block 4), unlike block 3's slot index
    assert {"<LR>#0=left", "<LR>#1=right", "<Object>#1=piano"} <= set(enc.named)
    assert "1:<LR>=left" in enc.slots and "0:<LR>=left" in enc.slots
    a, b = enc.encode([cmp1, cmp2])
    col = enc._n["<LR>#0=left"]
    assert a[col] == b[col] == 1
    assert BowQuestionEncoder.from_json({k: v for k, v in enc.to_json().items() if k != "named"}).dim \
        == enc.dim - len(enc.named)  # heads saved before block 4 keep their encoding


def planted_spatial(tmp: Path, n_videos: int = 120, seed: int = 0, train_sides: tuple = ("left", "right")) -> dict:
    """Two instruments per video, one per column of a 2x2 grid, each playing (its cells' motion
    high, the sound panned to its side) or not, independently. "Is the instrument on the <LR>
    playing?": the answer needs the column the slot names. ``train_sides``: the sides the
    training questions ask about (test questions ask both)."""
    rng = np.random.default_rng(seed)
    arrays, questions = {}, []
    for i in range(n_videos):
        on = rng.random(2) < 0.5  # left, right
        motion = np.zeros((T, 9))
        for col in (0, 1):
            for row in (0, 1):
                motion[:, row * G + col] = 0.5 * on[col] + 0.15 * rng.normal(size=T)
                motion[:, 4 + row * G + col] = rng.normal(size=T)  # colour: noise
        motion[:, 8] = motion[:, :4].mean(1)
        ild = 6.0 * (on[0].astype(float) - on[1]) + rng.normal(size=(T, 3))
        priors = np.concatenate([-30 + 3 * rng.normal(size=(T, 1)), ild], axis=1)
        vid = f"{i:08d}"
        arrays[vid] = {"motion": motion, "priors": priors}
        for k, side in enumerate(("left", "right")):
            questions.append(Question(2 * i + k, vid, TEMPLATE, TEMPLATE.replace("<LR>", side), (side,),
                                      "Audio-Visual", "Location", "yes" if on[k] else "no"))
    specs = [(OutputSpec("motion", (9,), "visual", attrs={"grid": G, "layout": json.dumps(MOTION_LAYOUT)}),
              prov("motion")),
             (OutputSpec("priors", (4,), "audio", attrs={"layout": json.dumps(PRIORS_LAYOUT), "ild_sign": ILD_SIGN}),
              prov("priors"))]
    n_tr, n_va = int(0.6 * n_videos) * 2, int(0.2 * n_videos) * 2
    split = {"train": [q for q in questions[:n_tr] if q.values[0] in train_sides],
             "val": [q for q in questions[n_tr:n_tr + n_va] if q.values[0] in train_sides],
             "test": questions[n_tr + n_va:]}
    out = {"cache": write_cache(tmp / "s.h5", specs, arrays)}
    for key, qs in split.items():
        out[key] = tmp / f"s-{key}.json"
        write_questions(out[key], qs)
    return out


FAST = {"max_epochs": 20, "patience": 20, "batch_size": 32, "hidden": 32}


def _side_accuracy(head: Path, files: dict, side: str) -> float:
    rows = {q.question_id: q.answer for q in load_questions(files["test"]) if q.values == (side,)}
    out = head.parent / f"{head.name}-pred.jsonl"
    api.predict(head, files["cache"], files["test"], out)
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    hits = [p["answer"] == rows[p["question_id"]] for p in preds if p["question_id"] in rows]
    return float(np.mean(hits))


def test_spatial_head_reads_the_named_column(tmp_path):
    files = planted_spatial(tmp_path)
    api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp_path / "h", seed=0, hparams=FAST)
    meta, _ = load_checkpoint(tmp_path / "h")
    assert meta["hparams"]["arch"] == "spatial" and meta["hparams"]["mirror"]
    assert meta["dims"]["spatial"] == {"grid": 2, "cells": [0, 4], "ild": [1, 2, 3], "ild_sign": 1}
    assert meta["n_train_mirrored"] == meta["n_train"]
    r = api.evaluate(tmp_path / "h", files["cache"], files["test"])
    head, base = r["tables"]["avqa-head"]["All"]["accuracy"], r["tables"]["question-only"]["All"]["accuracy"]
    # 48 test questions; yes/no is balanced given the question, so the baseline sits near 1/2
    assert head >= 0.85 and base <= 0.5 + 0.22


def test_mirrored_copies_teach_the_other_side(tmp_path):
    """Trained on questions about the left only: the right is answerable only through the
    mirrored copies (features mirrored, "left" -> "right" in the questions)."""
    files = planted_spatial(tmp_path, train_sides=("left",))
    api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp_path / "m", seed=0, hparams=FAST,
                   baseline=False)
    api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp_path / "n", seed=0,
                   hparams=dict(FAST, mirror=False), baseline=False)
    assert _side_accuracy(tmp_path / "m", files, "right") >= 0.8
    # without mirrored copies "right" was never seen; 24 questions, chance 1/2 plus 2.5 std
    assert _side_accuracy(tmp_path / "n", files, "right") <= 0.5 + 0.26


def test_spatial_needs_grid_cells(tmp_path):
    from test_heads_support import planted_avqa

    files = planted_avqa(tmp_path, n_videos=30)
    with pytest.raises(HeadError, match="grid cells"):
        api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp_path / "x",
                       hparams={"arch": "spatial", "max_epochs": 1})
    api.train_head(files["cache"], "avqa", files["train"], files["val"], None, tmp_path / "y",
                   hparams={"max_epochs": 1}, baseline=False)
    meta, _ = load_checkpoint(tmp_path / "y")
    assert meta["hparams"]["arch"] == "temporal" and not meta["hparams"]["mirror"]  # no layout: AvqaHead
