"""Question features of the field (`featpipe encode-text --field-tables`): PSTP-Net's `clip_qst` and
`clip_word`, TSPM's `qst` and `qaPrompt`, stored per question id.

References built here: the feature scripts' question rule re-done word by word; TSPM's prompts for
hand-picked questions written out in full; per-token outputs recomputed from open_clip's modules
(token embedding, transformer with its causal mask, ln_final, text_projection), whose end-of-text
row must equal `encode_text`. Questions: 99 real MUSIC-AVQA validation questions, 3 per template
(tests/data, MIT). Text model: a tiny random open_clip CLIP (its BPE tokenizer ships in the wheel).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from featpipe import cli
from featpipe import open_cache
from featpipe.avqa import load_questions, write_questions
from featpipe.cache import CacheWriter
from featpipe.data import load_json
from featpipe.data.tspm import PromptError, prompt_rows, tspm_prompt
from featpipe.text import build_text_encoder, field_question_text
from test_clap import make_tiny_clap

SAMPLE = Path(__file__).parent / "data" / "music-avqa-33-templates.json"
TIMELINE = {"fps": 1.0, "seg_len": 1.0, "max_seconds": None, "pad": "repeat"}


@pytest.fixture(scope="module")
def questions():
    return load_questions(SAMPLE)


@pytest.fixture
def cache(tmp_path) -> Path:
    path = tmp_path / "c.h5"
    with CacheWriter(path, TIMELINE):
        pass
    return path


def _scripts_rule(template: str, values) -> str:
    """PSTP-Net's / TSPM's extract_qst scripts: split at spaces, drop the last character, fill slot words."""
    words = template.rstrip().split(" ")
    words[-1] = words[-1][:-1]
    it = iter(values)
    return " ".join(next(it) if "<" in w else w for w in words)


def test_field_question_text_is_the_scripts_rule(questions):
    assert len({q.template for q in questions}) == 33
    for q in questions:
        assert field_question_text(q) == _scripts_rule(q.template, q.values)
    by_id = {q.question_id: q for q in questions}
    assert field_question_text(by_id[7]) == "Is the ukulele in the video always playing"
    odd = [q for q in questions if q.template.endswith(("\uff1f", " "))]
    assert {q.template for q in odd} == {"How many sounding <Object> in the video\uff1f",
                                         "Are there <Object> and <Object> sound? ",
                                         "What kind of instrument is the <LRer> instrument? "}
    assert all(not field_question_text(q).endswith(("?", "\uff1f", " ")) for q in odd)


def test_tspm_prompt_table_and_hand_picked_prompts(questions):
    doc = load_json("tspm_text_prompts.json")  # package data, read through importlib.resources
    assert "GeWu-Lab/TSPM" in doc["source"]["repository"] and "TextPrompt.xlsx" in doc["source"]["table"]
    assert "licence" in doc["source"] and len(doc["prompts"]) == 33
    assert [r["no"] for r in doc["prompts"]] == list(range(1, 34))
    noted = 0
    for row in doc["prompts"]:
        xlsx = re.sub(r"<[A-Za-z]+\d?>", "{}", row["xlsx_prompt"])
        same = xlsx == row["prompt"] and row["no"] != 11  # row 11: same words, another value in the slot
        assert same != ("differs_from_xlsx" in row), row["no"]
        noted += "differs_from_xlsx" in row
        assert row["prompt"].count("{}") == len(row["values"])
    assert noted == 10
    # every real template (also the full-width '？' and trailing-space ones) has its row
    assert {q.template.strip().replace("\uff1f", "?") for q in questions} == set(prompt_rows())
    want = {
        ("Is the <Object> in the video always playing?", ("ukulele",)): "The ukulele is not playing in this video.",
        ("What is the <LR> instrument of the <FL> sounding instrument?", ("right", "first")):
            "There are musical instruments on the first that are not being played.",
        ("Is the <Object> on the <LR> more rhythmic than the <Object> on the <LR>?",
         ("xylophone", "right", "acoustic_guitar", "left")):
            "The xylophone on the right plays a different rhythm than the acoustic_guitar on the left.",
        ("Which instrument makes sounds <BA> the <Object>?", ("after", "piano")): "The piano is playing in this video.",
        ("Are there <Object> and <Object> sound? ", ("violin", "pipa")):
            "There are sounds of instruments other than the violin or the pipa in the video.",
        ("How many sounding <Object> in the video\uff1f", ("banjo",)): "The banjo is playing in this video.",
        ("Is this sound from the instrument in the video?", ()): "The sound is from the instrument in the video.",
        ("Where is the performance?", ()): "There are musical instruments playing in the video.",
    }
    for (template, values), prompt in want.items():
        assert tspm_prompt(template, values) == prompt
    with pytest.raises(PromptError, match="not one of the 33") as err:
        tspm_prompt("Is the <Object> purple?", ("cello",))
    assert "\n" not in str(err.value)


def test_words_are_projected_per_token_outputs(tiny_clip):
    enc = build_text_encoder(f"clip:{tiny_clip}/random")
    enc.check()
    enc.load("cpu")
    texts = ["Is the ukulele in the video always playing", "The piano is playing in this video."]
    sent, words = enc.encode_with_words(texts)
    assert sent.shape == (2, 32) and words.shape == (2, 77, 32) and enc.context_length == 77
    m = enc.model
    tokens = enc.tokenizer(texts)
    with torch.no_grad():
        x = m.token_embedding(tokens) + m.positional_embedding
        x = m.transformer(x, attn_mask=m.attn_mask)
        want = (m.ln_final(x) @ m.text_projection).numpy()
    np.testing.assert_allclose(words, want, atol=1e-5)
    eot = tokens.argmax(dim=-1).numpy()
    np.testing.assert_allclose(words[np.arange(2), eot], sent, atol=1e-5)  # the sentence is the EOT row
    np.testing.assert_allclose(sent, enc.encode(texts), atol=1e-6)
    assert not np.allclose(words[0, 1], words[1, 1], atol=1e-3)  # different first words


def _cli(*args):
    return CliRunner().invoke(cli.main, ["encode-text", *map(str, args)], catch_exceptions=False)


def test_encode_text_field_tables_through_the_cli(cache, tiny_clip, questions, tmp_path):
    spec = f"clip:{tiny_clip}/random"
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    write_questions(first, questions[:60])
    write_questions(second, questions)
    res = _cli(cache, "--questions", first, "--text-encoder", spec, "--field-tables", "--device", "cpu")
    assert res.exit_code == 0, res.output
    base = "clip-tiny-clip-random"
    for suffix in ("", "-qst", "-words", "-qaprompt"):
        assert f"{base}{suffix} ({spec}):" in res.output
    enc = build_text_encoder(spec)
    enc.check()
    enc.load("cpu")
    ids = [q.question_id for q in questions[:60]]
    qst_text = [field_question_text(q) for q in questions[:60]]
    prompts = [tspm_prompt(q.template, q.values) for q in questions[:60]]
    sent, words = enc.encode_with_words(qst_text)
    with open_cache(cache) as c:
        assert set(c.text_encoders) == {base + s for s in ("", "-qst", "-words", "-qaprompt")}
        got_qst = c.text_embeddings(base + "-qst", question_ids=ids)
        got_words = c.text_embeddings(base + "-words", question_ids=ids[:5])
        got_prompt = c.text_embeddings(base + "-qaprompt", question_ids=ids)
        plain = c.text_embeddings(base, question_ids=ids)
        prov = c.text_provenance(base + "-words")
        n_prompts = len(c.text_items(base + "-qaprompt"))
    assert got_words.shape == (5, 77, 32)  # issue 12 writes clip_word/<qid>.npy as got_words[i:i+1]
    np.testing.assert_allclose(got_qst, sent, atol=2e-3)  # stored as float16
    np.testing.assert_allclose(got_words, words[:5], atol=2e-3)
    np.testing.assert_allclose(got_prompt, enc.encode(prompts), atol=2e-3)
    np.testing.assert_allclose(plain, enc.encode([q.text for q in questions[:60]]), atol=2e-3)
    assert not np.allclose(plain, got_qst, atol=1e-2)  # '?' or not matters to CLIP
    assert prov["output"] == "words" and prov["weights"] == "random-init"
    assert n_prompts == len(set(prompts)) < 60  # prompts are shared across questions, stored once

    again = _cli(cache, "--questions", second, "--text-encoder", spec, "--field-tables", "--device", "cpu")
    assert again.exit_code == 0, again.output
    with open_cache(cache) as c:
        more = [q.question_id for q in questions[60:]]
        np.testing.assert_allclose(c.text_embeddings(base + "-words", question_ids=more[:3]),
                                   enc.encode_with_words([field_question_text(q) for q in questions[60:63]])[1],
                                   atol=2e-3)
        assert c.text_embeddings(base + "-qaprompt", question_ids=more).shape == (39, 32)
    rerun = _cli(cache, "--questions", second, "--text-encoder", spec, "--field-tables", "--device", "cpu")
    assert rerun.output.count(" 0 texts encoded, 0 given new ids") == 4


def test_field_tables_one_line_refusals(cache, tmp_path):
    clap = make_tiny_clap(tmp_path / "clap")
    res = _cli(cache, "--questions", SAMPLE, "--text-encoder", f"clap:{clap}", "--field-tables")
    assert res.exit_code != 0 and "needs a CLIP text encoder" in res.output
    strings = tmp_path / "s.txt"
    strings.write_text("piano\n")
    res = _cli(cache, "--strings", strings, "--text-encoder", "clip:ViT-B-32/random", "--field-tables")
    assert res.exit_code != 0 and "needs --questions" in res.output
    bad = tmp_path / "bad.json"
    entry = json.loads(SAMPLE.read_text())[0]
    entry["question_content"] = "Is the <Object> purple?"
    bad.write_text(json.dumps([entry]))
    res = _cli(cache, "--questions", bad, "--text-encoder", "clip:ViT-B-32/random", "--field-tables")
    assert res.exit_code != 0 and f"question_id {entry['question_id']}" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_multi_axis_text_tables_survive_a_merge(tmp_path):
    from featpipe.cache.merge import merge_caches

    rows = {}
    for name, texts in (("a.h5", ["x", "y"]), ("b.h5", ["z"])):
        with CacheWriter(tmp_path / name, TIMELINE) as w:
            w.ensure_text_table("enc-words", (3, 4), {"weights": "w"})
            emb = np.random.default_rng(len(texts)).normal(size=(len(texts), 3, 4)).astype(np.float16)
            w.add_texts("enc-words", [{"text": t, "ids": [ord(t)]} for t in texts], emb)
            rows.update(zip(texts, emb))
    merge_caches([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "m.h5")
    with open_cache(tmp_path / "m.h5") as c:
        got = c.text_embeddings("enc-words", question_ids=[ord("z"), ord("x")], dtype=np.float16)
        assert c.text_embeddings("enc-words", question_ids=[]).shape == (0, 3, 4)
    np.testing.assert_array_equal(got, np.stack([rows["z"], rows["x"]]))
