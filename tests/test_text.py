"""`featpipe encode-text`: question and string embeddings stored in the cache, looked up by id or text.

The real MUSIC-AVQA validation questions (4,568) are encoded with a tiny random CLIP text tower
(open_clip's BPE tokenizer ships in its wheel); CLAP's text side runs on a tiny random model
with a hand-made word-level tokenizer (unknown words map to <unk>, enough to exercise the path).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featpipe import cli
from featpipe import open_cache
from featpipe.avqa import fill_template, load_questions, write_questions
from featpipe.cache import CacheWriter
from featpipe.extractors import OutputSpec, build
from featpipe.text import TextError, build_text_encoder, collect_texts
from avqa_data import real_file
from test_clap import make_tiny_clap

VAL = real_file("avqa-val.json")
TIMELINE = {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"}


def _run(*args):
    return CliRunner().invoke(cli.main, ["encode-text", *map(str, args)], catch_exceptions=False)


def _rows(cache, encoder) -> int:
    with open_cache(cache) as c:
        return c.f["texts"][encoder]["data"].shape[0]


def _direct(spec: str, texts: list[str]) -> np.ndarray:
    enc = build_text_encoder(spec)
    enc.check()
    enc.load("cpu")
    return enc.encode(texts)


@pytest.fixture
def cache(tmp_path) -> Path:
    path = tmp_path / "c.h5"
    with CacheWriter(path, TIMELINE):
        pass
    return path


@pytest.fixture(scope="module")
def val_questions():
    return load_questions(VAL)


def test_collect_texts_dedupes_and_keeps_ids(val_questions, tmp_path):
    texts = collect_texts([VAL])
    assert sum(len(ids) for ids in texts.values()) == len(val_questions) == 4568
    assert len(texts) < len(val_questions)  # many questions share their filled-in text
    by_id = {q: t for t, ids in texts.items() for q in ids}
    for q in val_questions[::97]:
        assert by_id[q.question_id] == fill_template(q.template, q.values)
    strings = tmp_path / "s.txt"
    strings.write_text("  guitar \n\npiano\nguitar\n")
    more = collect_texts([], [strings])
    assert more == {"guitar": [], "piano": []}
    clash = tmp_path / "clash.json"
    q = val_questions[0]
    write_questions(clash, [q, dataclasses.replace(q, text="x", values=("violin",) * len(q.values))])
    with pytest.raises(TextError, match=f"question_id {q.question_id} has two texts"):
        collect_texts([clash])


def test_encode_val_questions_with_clip(cache, tiny_clip, val_questions, tmp_path):
    spec = f"clip:{tiny_clip}/random"
    name = build(spec).outputs()[0].name  # the visual feature's name: a head pairs them
    assert name == "clip-tiny-clip-random"
    res = _run(cache, "--questions", VAL, "--text-encoder", spec, "--device", "cpu")
    assert res.exit_code == 0, res.output
    n_texts = len(collect_texts([VAL]))
    assert f"{n_texts} texts encoded, 0 given new ids, 0 already present" in res.output

    sample = val_questions[:3] + val_questions[-3:] + val_questions[500:4000:250]
    texts = [q.text for q in sample]
    want = _direct(spec, texts)
    with open_cache(cache) as c:
        assert c.text_encoders == [name] and len(c.text_items(name)) == n_texts
        by_id = c.text_embeddings(name, question_ids=[q.question_id for q in sample])
        by_text = c.text_embeddings(name, texts=texts)
        prov = json.loads(c.f["texts"][name].attrs["provenance"])
    assert prov["spec"] == spec and prov["weights"] == "random-init" and prov["side"] == "text"
    assert by_id.shape == (len(sample), 32)
    np.testing.assert_array_equal(by_id, by_text)
    np.testing.assert_allclose(by_id, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())  # float16 storage
    assert not np.allclose(by_id[0], by_id[1])

    rows = _rows(cache, name)
    res = _run(cache, "--questions", VAL, "--text-encoder", spec)
    assert res.exit_code == 0 and f"0 texts encoded, 0 given new ids, {n_texts} already present" in res.output
    assert _rows(cache, name) == rows

    # new strings only; a new question id for a stored text reuses its row's values
    strings = tmp_path / "answers.txt"
    strings.write_text(f"banjo\n{sample[0].text}\naccordion\n")
    extra = tmp_path / "extra.json"
    write_questions(extra, [dataclasses.replace(sample[1], question_id=10_000_001)])
    res = _run(cache, "--questions", VAL, "--questions", extra, "--strings", strings, "--text-encoder", spec)
    assert res.exit_code == 0 and "2 texts encoded, 1 given new ids" in res.output
    assert _rows(cache, name) == rows + 3
    with open_cache(cache) as c:
        np.testing.assert_array_equal(c.text_embeddings(name, question_ids=[10_000_001]),
                                      c.text_embeddings(name, question_ids=[sample[1].question_id]))
        np.testing.assert_allclose(c.text_embeddings(name, texts=["banjo", "accordion"]),
                                   _direct(spec, ["banjo", "accordion"]), rtol=2e-3, atol=2e-3)

    # a stored question id whose text changed is refused in one line
    changed = tmp_path / "changed.json"
    write_questions(changed, [dataclasses.replace(sample[2], values=("banjo",) * len(sample[2].values))])
    res = _run(cache, "--questions", changed, "--text-encoder", spec)
    assert res.exit_code == 2 and "use a new cache" in res.output and res.output.count("\n") == 1


def test_clap_text_pairs_with_the_audio_feature(cache, tmp_path):
    folder = make_tiny_clap(tmp_path / "tiny-clap")
    spec = f"clap:{folder}"
    strings = tmp_path / "s.txt"
    texts = ["How many instruments are playing?", "Is the piano on the left?", "a guitar sound"]
    strings.write_text("\n".join(texts))
    res = _run(cache, "--strings", strings, "--text-encoder", spec, "--batch-size", "2")
    assert res.exit_code == 0, res.output
    name = build(spec).outputs()[0].name
    assert name == "clap-tiny-clap"
    with open_cache(cache) as c:
        got = c.text_embeddings(name, texts=texts)
    want = _direct(spec, texts)
    np.testing.assert_allclose(got, want, atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(want[0], want[1], atol=1e-3)

    (folder / "tokenizer.json").unlink()
    res = _run(cache, "--strings", strings, "--text-encoder", spec)
    assert res.exit_code == 2 and "has no tokenizer" in res.output


def test_default_encoders_come_from_the_cache_features(cache, tiny_clip, tmp_path):
    spec = f"clip:{tiny_clip}/random"
    strings = tmp_path / "s.txt"
    strings.write_text("cello\n")
    res = _run(cache, "--strings", strings)
    assert res.exit_code == 2 and "no CLIP or CLAP feature" in res.output
    with CacheWriter(cache) as w:  # what `featpipe extract --visual clip:...` declares
        w.ensure_feature(OutputSpec("clip-tiny-clip-random", (32,), "visual"), {"spec": spec, "weights": "random-init"})
    res = _run(cache, "--strings", strings)
    assert res.exit_code == 0 and "clip-tiny-clip-random" in res.output and "1 texts encoded" in res.output

    other = tmp_path / "o.h5"
    with CacheWriter(other, TIMELINE) as w:
        w.ensure_feature(OutputSpec("clip-tiny-clip-random", (32,), "visual"), {"spec": spec, "weights": "sha256:00"})
    res = _run(other, "--strings", strings)
    assert res.exit_code == 2 and "other weights" in res.output
    res = _run(cache, "--text-encoder", spec)
    assert res.exit_code == 2 and "nothing to encode" in res.output
    res = _run(cache, "--strings", strings, "--text-encoder", "priors")
    assert res.exit_code == 2 and "has no text encoder" in res.output
