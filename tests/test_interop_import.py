"""`featpipe import`: layouts and plain folders into a cache, round trips, refusals, and
`featpipe extract` adding features to an imported cache (end to end through `featpipe synth`)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from featpipe.cli import main
from featpipe.cache import CacheWriter, open_cache
from test_interop import FEATURES, build_cache, pstp_items

from torch.utils.data import default_collate


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.npy"))}


def test_round_trip_export_import_export(tmp_path):
    feats = {k: FEATURES[k] for k in ("vggish", "clip-ViT-L-14-336-openai", "tome14")}
    cache = build_cache(tmp_path / "c.h5", feats, {"a": 60, "b": 33}, {})
    first, second = tmp_path / "one", tmp_path / "two"
    assert run_cli("export", cache, "--layout", "qa-tiger", "-o", first, "--quiet").exit_code == 0
    r = run_cli("import", first, "--layout", "qa-tiger", "-o", tmp_path / "back.h5", "--quiet")
    assert r.exit_code == 0, r.output
    assert "imported vggish (2 videos), clip-ViT-L-14-336-imported (2 videos), tome14 (2 videos)" in r.output
    with open_cache(tmp_path / "back.h5") as c, open_cache(cache) as orig:
        assert c.videos == ["a", "b"]
        for name, new in (("vggish", "vggish"), ("tome14", "tome14"), ("clip-ViT-L-14-336-openai", "clip-ViT-L-14-336-imported")):
            for v in c.videos:  # the same arrays (float16 in, float32 files, float16 back: exact)
                np.testing.assert_array_equal(c.get(v, new).data, orig.get(v, name).data)
            info, prov = c.info(new), c.provenance(new)
            assert info.on_timeline and info.hop == 1.0 and prov["spec"] == f"import:{new}" and prov["weights"] == "imported"
        prov = c.provenance("vggish")["imported"]
        assert prov["from"] == str((first / "feats/vggish").resolve()) and prov["file_shape"] == [None, 128]
        assert prov["file_dtype"] == "float32" and prov["layout"] == "qa-tiger"
        assert c.record("b")["imported"]["tome14"]["shape"] == [60, 14, 1024]
        assert c.info("vggish").modality == "audio" and c.info("tome14").modality == "visual"
        x, mask = c.batch(c.videos, "vggish")  # readers use it like an extracted feature
        assert x.shape == (2, 60, 128) and mask.all()
    assert run_cli("export", tmp_path / "back.h5", "--layout", "qa-tiger", "-o", second, "--quiet").exit_code == 0
    assert files(first) == files(second)  # byte for byte
    assert "vggish" in run_cli("info", tmp_path / "back.h5").output


def test_refusals_are_one_line_and_the_rest_is_imported(tmp_path):
    folder = tmp_path / "vggish"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "good.npy", rng.standard_normal((60, 128)).astype(np.float32))
    np.save(folder / "short.npy", rng.standard_normal((59, 128)).astype(np.float32))
    np.save(folder / "wide.npy", rng.standard_normal((60, 129)).astype(np.float32))
    (folder / "broken.npy").write_bytes(b"not a numpy file")
    (folder / "notes.txt").write_text("ignored")
    r = run_cli("import", "--feature", f"vggish={folder}", "-o", tmp_path / "c.h5", "--quiet")
    assert r.exit_code == 1
    refused = sorted(ln for ln in r.output.splitlines() if ln.startswith("refused:"))
    assert len(refused) == 3
    assert "short.npy: 59 rows, the cache's timeline has 60 one-second segments" in refused[1]
    assert "wide.npy: rows of (129,)" in refused[2] and "broken.npy: not a readable .npy" in refused[0]
    with open_cache(tmp_path / "c.h5") as c:
        assert c.videos == ["good"] and c.timeline["max_seconds"] == 60.0 and c.info("vggish").modality == "audio"


def test_pstp_net_released_patch_features_are_refused(tmp_path):
    """PSTP-Net's released extract_patch-level_feat.py writes the CLS into all 50 tokens."""
    root = tmp_path / "pstp"
    (root / "clip_patch-level_vit_b32").mkdir(parents=True)
    cls = np.random.default_rng(0).standard_normal((60, 1, 512)).astype(np.float32)
    np.save(root / "clip_patch-level_vit_b32/bad.npy", np.repeat(cls, 50, axis=1))
    good = np.random.default_rng(1).standard_normal((60, 50, 512)).astype(np.float32)
    np.save(root / "clip_patch-level_vit_b32/good.npy", good)
    r = run_cli("import", root, "--layout", "pstp-net", "-o", tmp_path / "c.h5", "--quiet")
    assert r.exit_code == 1 and "bad.npy: every token repeats token 0" in r.output
    # imported under a name the pstp-net table finds again: export gives the file back
    tables = {"clip-ViT-B-32-openai": 512, "clip-ViT-B-32-openai-words": 77 * 512}
    with CacheWriter(tmp_path / "c.h5") as w:  # what else the layout needs, written directly
        for name, dim in tables.items():
            w.ensure_text_table(name, dim, {"spec": name, "weights": "sha256:test"})
        w.ensure_feature(*_spec("vggish", (128,)))
        w.start()
        for name, dim in tables.items():
            w.add_texts(name, [{"text": "q", "ids": [5]}], np.ones((1, dim), np.float32))
        rec = dict(w.records["good"])
        w.commit({k: v for k, v in rec.items() if k not in ("features", "committed")},
                 {"vggish": np.zeros((60, 128), np.float32)})
    out = tmp_path / "out"
    r = run_cli("export", tmp_path / "c.h5", "--layout", "pstp-net", "-o", out, "--quiet")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(out / "clip_patch-level_vit_b32/good.npy"), good.astype(np.float16))


def _spec(name, shape):
    from featpipe.extractors.base import OutputSpec

    return OutputSpec(name, shape, "audio"), {"spec": name, "weights": "none"}


def test_import_into_an_extracted_cache_keeps_its_features(tmp_path):
    cache = build_cache(tmp_path / "c.h5", {"tome14": FEATURES["tome14"]}, {"a": 60, "b": 60}, {})
    folder = tmp_path / "audio"
    folder.mkdir()
    np.save(folder / "a.npy", np.full((60, 16), 2.0, np.float32))
    np.save(folder / "c.npy", np.full((60, 16), 3.0, np.float32))
    r = run_cli("import", "--feature", f"beats={folder}", "--modality", "beats=audio", "-o", cache, "--quiet")
    assert r.exit_code == 0, r.output
    with open_cache(cache) as c:
        assert c.videos == ["a", "b", "c"]
        assert c.has("a", "tome14") and c.has("a", "beats") and c.has("b", "tome14") and not c.has("b", "beats")
        assert c.record("a")["source"] == {"size": 60, "mtime": 0}  # the extracted video keeps its source
        assert (c.get("c", "beats").data == 3).all() and c.info("beats").modality == "audio"


# A small random CLIP with ViT-B/32's output shapes (512-d, a 7x7 token grid), registered under a
# name the pstp-net table matches, so the test runs the real clip extractor and text encoder fast.
B32_SHAPED = {"embed_dim": 512,
              "vision_cfg": {"image_size": 56, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_end_to_end_synth_extract_import_export(tmp_path, monkeypatch):
    """featpipe synth -> import of a VGGish folder -> featpipe extract (priors, a random CLIP shaped like
    ViT-B/32, with tokens) into the same cache -> encode-text -> export pstp-net and generic -> import generic."""
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg/ViT-B-32-tiny.json").write_text(json.dumps(B32_SHAPED))
    monkeypatch.setenv("FEATPIPE_OPENCLIP_CONFIGS", str(tmp_path / "cfg"))
    assert run_cli("synth", tmp_path / "set", "--videos", 2, "--seconds", 2, "--seed", 3).exit_code == 0
    questions = [tmp_path / "set" / f"avqa-{s}.json" for s in ("train", "val", "test")]
    vids = sorted(p.stem for p in (tmp_path / "set/videos").glob("*.mp4"))
    downloaded = tmp_path / "downloaded_vggish"  # as QA-TIGER and TSPM share them: (60, 128) per video
    downloaded.mkdir()
    rng = np.random.default_rng(0)
    for v in vids:
        np.save(downloaded / f"{v}.npy", rng.standard_normal((60, 128)).astype(np.float32))
    cache = tmp_path / "c.h5"
    assert run_cli("import", "--feature", f"vggish={downloaded}", "-o", cache, "--quiet").exit_code == 0
    r = run_cli("extract", tmp_path / "set/videos", "-o", cache, "--audio", "priors", "--visual", "clip:ViT-B-32-tiny/random",
                "--tokens", "--fps", 1, "--max-seconds", 60, "--workers", 1, "--quiet")
    assert r.exit_code == 0, r.output
    qargs = [a for q in questions for a in ("--questions", q)]
    r = run_cli("export", cache, "--layout", "pstp-net", "-o", tmp_path / "nope", *qargs, "--quiet")
    assert r.exit_code == 2 and "clip_qst/ needs text table" in r.output and not (tmp_path / "nope").exists()
    assert run_cli("encode-text", cache, *qargs, "--text-encoder", "clip:ViT-B-32-tiny/random").exit_code == 0
    with open_cache(cache) as c:  # the word-level table: a stand-in for the text helper's output
        ids = sorted(c.text_ids("clip-ViT-B-32-tiny-random"))
        for v in vids:  # the imported VGGish survived the extraction that added the other features
            np.testing.assert_array_equal(c.get(v, "vggish").data.astype(np.float32),
                                          np.load(downloaded / f"{v}.npy").astype(np.float16))
            assert c.has(v, "priors") and c.has(v, "clip-ViT-B-32-tiny-random-tokens")
    with CacheWriter(cache) as w:
        w.ensure_text_table("clip-ViT-B-32-tiny-random-words", 77 * 512, {"spec": "words", "weights": "random-init"})
        w.start()
        w.add_texts("clip-ViT-B-32-tiny-random-words", [{"text": str(q), "ids": [q]} for q in ids],
                    rng.standard_normal((len(ids), 77 * 512)).astype(np.float32))
    out = tmp_path / "pstp"
    r = run_cli("export", cache, "--layout", "pstp-net", "-o", out, *qargs, "--quiet")
    assert r.exit_code == 0, r.output
    samples = [s for q in questions for s in json.loads(q.read_text())]
    args = {"audios_feat_dir": str(out / "vggish"), "clip_vit_b32_dir": str(out / "clip_patch-level_vit_b32"),
            "clip_qst_dir": str(out / "clip_qst"), "clip_word_dir": str(out / "clip_word")}
    batch = default_collate(list(pstp_items(args, samples)))
    assert batch["patch_feat"].shape == (len(samples), 60, 49, 512) and batch["qst_word"].shape[1:] == (1, 77, 512)
    with open_cache(cache) as c:
        for i, s in enumerate(samples):
            a = c.get(s["video_id"], "clip-ViT-B-32-tiny-random")
            assert a.valid == 2  # 2 s videos: seconds 2..59 repeat second 1
            np.testing.assert_array_equal(batch["visual_feat"][i].numpy(), a.data.astype(np.float32))
            np.testing.assert_array_equal(batch["patch_feat"][i].numpy(),
                                          c.get(s["video_id"], "clip-ViT-B-32-tiny-random-tokens").data.astype(np.float32))
            np.testing.assert_array_equal(batch["question"][i, 0].numpy(),
                                          c.text_embeddings("clip-ViT-B-32-tiny-random", question_ids=[s["question_id"]])[0])
    # generic export of an extracted feature and its import: the same arrays
    r = run_cli("export", cache, "--layout", "generic", "--feature", "priors=priors", "--text",
                "clip-ViT-B-32-tiny-random=qst", "-o", tmp_path / "gen", "--quiet")
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "gen/qst" / f"{ids[0]}.npy").shape == (1, 512)
    r = run_cli("import", "--feature", f"priors={tmp_path / 'gen/priors'}", "-o", tmp_path / "g.h5", "--quiet")
    assert r.exit_code == 0, r.output
    with open_cache(tmp_path / "g.h5") as g, open_cache(cache) as c:
        for v in vids:
            np.testing.assert_array_equal(g.get(v, "priors").data, c.get(v, "priors").data)
