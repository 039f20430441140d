"""`featpipe export`: each layout read back the way that project's dataloader reads it.

The caches here are written with featpipe's own CacheWriter under the feature and text-table
names the layout tables expect (docs/interop.md), with arrays of the real shapes. The readers
below follow each project's dataloader line by line (file names, np.load, the slicing, the
tensor conversion and the default collate), citing the file they follow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import default_collate

from featpipe.cli import main
from featpipe.cache import CacheWriter, open_cache
from featpipe.extractors.base import OutputSpec
from featpipe.interop.export import fit

TL60 = {"fps": 1.0, "seg_len": 1.0, "max_seconds": 60.0, "pad": "repeat"}
FEATURES = {  # name: (row shape, modality, spec) as the extractor branches name them
    "vggish": ((128,), "audio", "vggish"),
    "resnet18-14x14": ((512, 14, 14), "visual", "resnet18-14x14"),
    "tome14": ((14, 1024), "visual", "tome14"),
    "clip-ViT-B-32-openai": ((512,), "visual", "clip:ViT-B-32/openai"),
    "clip-ViT-B-32-openai-tokens": ((49, 512), "visual", "clip:ViT-B-32/openai"),
    "clip-ViT-L-14-336-openai": ((768,), "visual", "clip:ViT-L-14-336/openai"),
}
TEXTS = {"clip-ViT-B-32-openai": 512, "clip-ViT-B-32-openai-words": 77 * 512, "clip-ViT-L-14-336-openai": 768,
         "clip-ViT-L-14-336-openai-qaprompt": 768}
VALID = {"00000001": 60, "00000002": 45, "00000003": 20}  # rows the recording covers (60 s, 45 s, 20 s)
QUESTIONS = [(11, "00000001"), (12, "00000002"), (13, "00000003"), (14, "00000001")]


def build_cache(path: Path, features=FEATURES, valid=VALID, texts=TEXTS, timeline=TL60, rows=None, seed=0) -> Path:
    """A cache as `featpipe extract --fps 1 --max-seconds 60` leaves it (last covered row repeated)."""
    rng = np.random.default_rng(seed)
    with CacheWriter(path, timeline) as w:
        for name, (shape, modality, spec) in features.items():
            w.ensure_feature(OutputSpec(name, shape, modality), {"spec": spec, "weights": "sha256:test"})
        for name, dim in texts.items():
            w.ensure_text_table(name, dim, {"spec": name, "weights": "sha256:test"})
        w.start()
        for vid, n in valid.items():
            total = rows(n) if rows else 60
            arrays = {}
            for name, (shape, _, _) in features.items():
                a = rng.standard_normal((total, *shape)).astype(np.float32)
                a[n:] = a[n - 1]
                arrays[name] = a
            w.commit({"video_id": vid, "source": {"size": n, "mtime": 0}, "segments": total, "valid": n},
                     arrays, {k: n for k in arrays})
        for name, dim in texts.items():
            w.add_texts(name, [{"text": f"q{q}", "ids": [q]} for q, _ in QUESTIONS],
                        rng.standard_normal((len(QUESTIONS), dim)).astype(np.float32))
    return path


def write_questions(path: Path, pairs=QUESTIONS) -> Path:
    path.write_text(json.dumps([{"video_id": v, "question_id": q, "type": '["Audio", "Counting"]',
                                 "question_content": "How many instruments are sounding in the video?",
                                 "templ_values": "[]", "question_deleted": 0, "anser": "two"} for q, v in pairs]))
    return path


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    d = tmp_path_factory.mktemp("interop")
    return build_cache(d / "c.h5"), write_questions(d / "q.json")


def run_cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def expected(cache_path: Path, vid: str, feature: str) -> np.ndarray:
    with open_cache(cache_path) as c:
        a = c.get(vid, feature)
    return fit(a.data.astype(np.float32), a.valid, 60)


def expected_text(cache_path: Path, table: str, qid: int) -> np.ndarray:
    with open_cache(cache_path) as c:
        return c.text_embeddings(table, question_ids=[qid])[0]


# -- the four projects' dataloader code paths ---------------------------------------------------
def avst_items(audio_dir: str, video_res14x14_dir: str, samples: list[dict]):
    """MUSIC-AVQA net_grd_avst/dataloader_avst.py AVQA_dataset.__getitem__ (lines 121-178) + ToTensor."""
    video_list = list(dict.fromkeys(s["video_id"] for s in samples))
    video_len = 60 * len(video_list)
    for sample in samples:
        name = sample["video_id"]
        audio = np.load(os.path.join(audio_dir, name + ".npy"))
        audio = audio[::6, :]
        visual_posi = np.load(os.path.join(video_res14x14_dir, name + ".npy"))
        visual_posi = visual_posi[::6, :]
        video_idx = video_list.index(name)
        negs = []
        for i in range(visual_posi.shape[0]):
            neg_frame_id = (video_idx * 60 + 60 + 7 * i) % video_len  # the loader draws it at random
            neg = torch.from_numpy(np.load(os.path.join(video_res14x14_dir, video_list[neg_frame_id // 60] + ".npy")))
            negs.append(neg[neg_frame_id % 60, :, :, :].unsqueeze(0))
        yield {"audio": torch.from_numpy(audio), "visual_posi": visual_posi, "visual_nega": torch.cat(negs, 0)}


def pstp_items(args, samples):
    """PSTP-Net dataloader.py AVQA_dataset.__getitem__ (lines 164-208), CLIP encoders, use_word."""
    for sample in samples:
        name, question_id = sample["video_id"], sample["question_id"]
        audios_feat = np.load(os.path.join(args["audios_feat_dir"], name + ".npy"))
        question_feat = np.load(os.path.join(args["clip_qst_dir"], str(question_id) + ".npy"))
        visual_CLIP_feat = np.load(os.path.join(args["clip_vit_b32_dir"], name + ".npy"))
        visual_feat = visual_CLIP_feat[:60, 0, :]
        visual_CLIP_feat = np.load(os.path.join(args["clip_vit_b32_dir"], name + ".npy"))
        patch_feat = visual_CLIP_feat[:60, 1:, :]
        word_feat = np.load(os.path.join(args["clip_word_dir"], str(question_id) + ".npy"))
        yield {"video_name": name, "audios_feat": torch.from_numpy(audios_feat),
               "visual_feat": torch.from_numpy(visual_feat), "patch_feat": torch.from_numpy(patch_feat),
               "question": question_feat, "qst_word": word_feat, "question_id": question_id}


def tspm_items(args, samples):
    """TSPM dataloader.py AVQA_dataset.__getitem__ (lines 106-141) + ToTensor (lines 143-165)."""
    for sample in samples:
        name, question_id = sample["video_id"], sample["question_id"]
        audios_feat = np.load(os.path.join(args["audios_feat_dir"], name + ".npy"))
        visual_feat = np.load(os.path.join(args["visual_feat_dir"], name + ".npy"))
        question_feat = np.load(os.path.join(args["qst_feat_dir"], str(question_id) + ".npy"))
        question_prompt = np.load(os.path.join(args["qst_prompt_dir"], str(question_id) + ".npy"))
        audios_patch_feat = np.load(os.path.join(args["audios_patch_dir"], name + ".npy"))
        visual_patch_feat = np.load(os.path.join(args["visual_patch_dir"], name + ".npy"))
        yield {"video_name": name, "audios_feat": torch.from_numpy(audios_feat),
               "visual_feat": torch.from_numpy(visual_feat), "audios_patch_feat": torch.from_numpy(audios_patch_feat),
               "visual_patch_feat": torch.from_numpy(visual_patch_feat).to(torch.float32),
               "question_feat": question_feat, "question_prompt": question_prompt, "question_id": question_id}


def qa_tiger_items(root: Path, data: dict, samples):
    """QA-TIGER src/dataset.py load_samples (lines 92-149) with precomputed features, sample_rate 1."""
    audio_feat, video_feat, patch_feat = (Path(root / data[k]).as_posix() for k in ("audio_feat", "video_feat", "patch_feat"))
    for sample in samples:
        name = sample["video_id"]
        video = torch.from_numpy(np.load(Path(video_feat) / f"{name}.npy"))[::1]
        patch = torch.from_numpy(np.load(Path(patch_feat) / f"{name}.npy"))[::1]
        audio = torch.from_numpy(np.load((Path(audio_feat) / f"{name}.npy").as_posix()))[::1]
        yield {"video": video, "audio": audio, "patch": patch, "name": name}


# -- tests --------------------------------------------------------------------------------------
def test_avst(full, tmp_path):
    cache, q = full
    out = tmp_path / "avst"
    r = run_cli("export", cache, "--layout", "avst", "-o", out, "--questions", q, "--quiet")
    assert r.exit_code == 0, r.output
    samples = json.loads(q.read_text())
    items = list(avst_items(str(out / "vggish"), str(out / "res18_14x14"), samples))
    batch = default_collate(items)
    assert batch["audio"].shape == (4, 10, 128) and batch["audio"].dtype == torch.float32
    assert batch["visual_posi"].shape == (4, 10, 512, 14, 14) and batch["visual_nega"].shape == (4, 10, 512, 14, 14)
    torch.nn.Linear(128, 512)(batch["audio"])  # net_avst.py fc_a1: float32 in, or it raises
    for s, item in zip(samples, items):
        np.testing.assert_array_equal(item["audio"].numpy(), expected(cache, s["video_id"], "vggish")[::6])
        np.testing.assert_array_equal(item["visual_posi"], expected(cache, s["video_id"], "resnet18-14x14")[::6])
    # the 20 s video: seconds 20..59 repeat second 19, audio and visual alike (MUSIC-AVQA issue #3)
    a = np.load(out / "vggish" / "00000003.npy")
    v = np.load(out / "res18_14x14" / "00000003.npy")
    assert a.shape == (60, 128) and v.shape == (60, 512, 14, 14) and a.dtype == v.dtype == np.float32
    assert (a[20:] == a[19]).all() and (v[20:] == v[19]).all() and not (a[18] == a[19]).all()
    manifest = json.loads((out / "featpipe-export.json").read_text())
    assert manifest["folders"]["vggish"]["features"] == ["vggish"] and "as cached" in manifest["padding"]


def test_pstp_net(full, tmp_path):
    cache, q = full
    out = tmp_path / "pstp"
    r = run_cli("export", cache, "--layout", "pstp-net", "-o", out, "--questions", q, "--quiet")
    assert r.exit_code == 0, r.output
    args = {"audios_feat_dir": str(out / "vggish"), "clip_vit_b32_dir": str(out / "clip_patch-level_vit_b32"),
            "clip_qst_dir": str(out / "clip_qst"), "clip_word_dir": str(out / "clip_word")}
    samples = json.loads(q.read_text())
    items = list(pstp_items(args, samples))
    batch = default_collate(items)
    assert batch["visual_feat"].shape == (4, 60, 512) and batch["patch_feat"].shape == (4, 60, 49, 512)
    assert batch["question"].shape == (4, 1, 512) and batch["qst_word"].shape == (4, 1, 77, 512)
    assert batch["audios_feat"].dtype == batch["question"].dtype == torch.float32
    for s, item in zip(samples, items):
        v = s["video_id"]
        np.testing.assert_array_equal(item["visual_feat"].numpy(), expected(cache, v, "clip-ViT-B-32-openai"))
        np.testing.assert_array_equal(item["patch_feat"].numpy(), expected(cache, v, "clip-ViT-B-32-openai-tokens"))
        assert not np.array_equal(item["patch_feat"][:, 0], item["visual_feat"])  # real patches, not the CLS again
        np.testing.assert_array_equal(item["question"][0], expected_text(cache, "clip-ViT-B-32-openai", s["question_id"]))
        np.testing.assert_array_equal(item["qst_word"].reshape(-1),
                                      expected_text(cache, "clip-ViT-B-32-openai-words", s["question_id"]))


def test_tspm(full, tmp_path):
    cache, q = full
    out = tmp_path / "tspm"
    r = run_cli("export", cache, "--layout", "tspm", "-o", out, "--questions", q, "--quiet")
    assert r.exit_code == 0, r.output
    args = {"audios_feat_dir": out / "vggish", "visual_feat_dir": out / "clip_feats/frame_1fps_ViT-L14@336px",
            "audios_patch_dir": out / "ToMe_feat/audio_tome14", "visual_patch_dir": out / "ToMe_feat/tome14",
            "qst_feat_dir": out / "clip_feats/qst_ViT-L14@336px",
            "qst_prompt_dir": out / "clip_feats/qaPrompt_ViT-L14@336px"}
    samples = json.loads(q.read_text())
    items = list(tspm_items({k: str(v) for k, v in args.items()}, samples))
    batch = default_collate(items)
    assert batch["audios_feat"].shape == (4, 60, 128) and batch["visual_feat"].shape == (4, 60, 768)
    assert batch["visual_patch_feat"].shape == (4, 60, 14, 1024)
    assert batch["question_feat"].shape == batch["question_prompt"].shape == (4, 1, 768)
    # nets/net.py input layers (lines 313-318) take these as float32
    torch.nn.Linear(128, 8)(batch["audios_feat"]), torch.nn.Linear(768, 8)(batch["visual_feat"])
    torch.nn.Linear(768, 8)(batch["question_feat"]).squeeze(-2)
    for s, item in zip(samples, items):
        v, qid = s["video_id"], s["question_id"]
        np.testing.assert_array_equal(item["visual_feat"].numpy(), expected(cache, v, "clip-ViT-L-14-336-openai"))
        np.testing.assert_array_equal(item["visual_patch_feat"].numpy(), expected(cache, v, "tome14"))
        np.testing.assert_array_equal(item["question_prompt"][0],
                                      expected_text(cache, "clip-ViT-L-14-336-openai-qaprompt", qid))
        np.testing.assert_array_equal(item["question_feat"][0], expected_text(cache, "clip-ViT-L-14-336-openai", qid))


def test_qa_tiger(full, tmp_path):
    cache, q = full
    root = tmp_path / "QA-TIGER"
    r = run_cli("export", cache, "--layout", "qa-tiger", "-o", root / "data", "--quiet")
    assert r.exit_code == 0, r.output
    data = {"audio_feat": "./feats/vggish", "video_feat": "./feats/frame_ViT-L14@336px",
            "patch_feat": "./feats/visual_tome14"}  # configs/qa-tiger/vitl14.py, under data.root './data'
    samples = json.loads(q.read_text())
    batch = default_collate(list(qa_tiger_items(root / "./data", data, samples)))
    assert batch["video"].shape == (4, 60, 768) and batch["patch"].shape == (4, 60, 14, 1024)
    assert batch["audio"].shape == (4, 60, 128)
    np.testing.assert_array_equal(batch["patch"][2].numpy(), expected(cache, "00000003", "tome14"))
    # the question tables exist in this cache, so the folders its configs/tspm config reads are written too
    assert np.load(root / "data/feats/qst_ViT-L14@336px/11.npy").shape == (1, 768)


def test_padding_applied_at_export(tmp_path):
    """A cache without --max-seconds: a 20 s video is padded, a 75 s one cut, both to 60 rows."""
    tl = dict(TL60, max_seconds=None)
    cache = build_cache(tmp_path / "c.h5", {"vggish": FEATURES["vggish"]}, {"a": 20, "b": 75}, {}, tl, rows=lambda n: n)
    r = run_cli("export", cache, "--layout", "generic", "--feature", "vggish=vggish", "--length", "60",
                "-o", tmp_path / "out", "--quiet")
    assert r.exit_code == 0, r.output
    assert "applied at export" in r.output
    a, b = (np.load(tmp_path / "out/vggish" / f"{v}.npy") for v in "ab")
    with open_cache(cache) as c:
        ra, rb = c.get("a", "vggish").data.astype(np.float32), c.get("b", "vggish").data.astype(np.float32)
    assert a.shape == b.shape == (60, 128)
    np.testing.assert_array_equal(a[:20], ra) and np.testing.assert_array_equal(a[20:], np.repeat(ra[-1:], 40, 0))
    np.testing.assert_array_equal(b, rb[:60])


def test_video_missing_a_feature(tmp_path):
    cache = build_cache(tmp_path / "c.h5", {k: FEATURES[k] for k in ("vggish", "resnet18-14x14")},
                        {"a": 60, "b": 30}, {})
    with CacheWriter(cache) as w:  # a third video with audio only
        w.start()
        w.commit({"video_id": "c", "source": {"size": 3, "mtime": 0}}, {"vggish": np.ones((60, 128), np.float32)})
    ids = tmp_path / "ids.txt"
    ids.write_text("video_id\na\nb\nc\nnope\n../evil\n")
    r = run_cli("export", cache, "--layout", "avst", "-o", tmp_path / "out", "--videos", ids, "--quiet")
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.startswith("missing:")]
    assert lines == ["missing: c: res18_14x14/ (no resnet18-14x14)", "missing: nope: not in c.h5",
                     "missing: ../evil: its id cannot be a file name"]
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.npy"))
    assert written == ["res18_14x14/a.npy", "res18_14x14/b.npy", "vggish/a.npy", "vggish/b.npy", "vggish/c.npy"]
    assert not (tmp_path / "evil.npy").exists()


def test_layout_with_nothing_to_export(tmp_path):
    cache = build_cache(tmp_path / "c.h5", {"vggish": FEATURES["vggish"]}, {"a": 60}, {})
    r = run_cli("export", cache, "--layout", "pstp-net", "-o", tmp_path / "out", "--quiet")
    assert r.exit_code == 2
    msg = r.output.strip().splitlines()[-1]
    assert "clip_patch-level_vit_b32/ needs" in msg and "--visual clip:ViT-B-32-quickgelu/openai --tokens" in msg
    assert "clip_qst/ needs text table" in msg and "featpipe encode-text" in msg
    assert not (tmp_path / "out").exists()  # failed before writing anything


def test_rerun_skips_unchanged_and_force_rewrites(full, tmp_path):
    cache, q = full
    out = tmp_path / "qt"
    args = ("export", cache, "--layout", "qa-tiger", "-o", out, "--quiet")
    assert "17 files written" in run_cli(*args).output  # 3 videos x 3 folders + 4 questions x 2 tables
    f = out / "feats/vggish/00000002.npy"
    np.save(f, np.zeros((60, 128), np.float32))  # a stale file of the right shape
    r = run_cli(*args)
    assert "1 files written, 16 unchanged" in r.output
    np.testing.assert_array_equal(np.load(f), expected(cache, "00000002", "vggish"))
    assert "17 files written, 0 unchanged" in run_cli(*args, "--force").output


def test_use_picks_between_candidates(full, tmp_path):
    """Two features fit a folder: export refuses to guess; --use chooses (and is shape-checked)."""
    cache, _ = full
    twin = build_cache(tmp_path / "c.h5", {"vggish": FEATURES["vggish"], "vggish-other": FEATURES["vggish"]},
                       {"a": 60}, {})
    r = run_cli("export", twin, "--layout", "qa-tiger", "-o", tmp_path / "o", "--quiet")
    assert r.exit_code == 2 and "could come from" in r.output
    r = run_cli("export", cache, "--layout", "avst", "-o", tmp_path / "o2", "--use", "vggish=tome14", "--quiet")
    assert r.exit_code == 2 and "needs rows of (128,)" in r.output


KILLER = """
import sys
from featpipe.interop import export, generic_layout
lay = generic_layout({"vggish": "vggish"}, {}, 60)
export(sys.argv[1], lay, sys.argv[2], force=sys.argv[3] == "1", batch_bytes=1 << 20)
"""


def test_kill_9_during_export_then_resume(tmp_path):
    n = 1500
    cache = build_cache(tmp_path / "c.h5", {"vggish": FEATURES["vggish"]}, {f"v{i:05d}": 60 for i in range(n)}, {})
    out = tmp_path / "out"
    folder = out / "vggish"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    killed_at = None
    for attempt in range(4):  # kill it while it writes (a fast machine may finish first: try again)
        proc = subprocess.Popen([sys.executable, "-c", KILLER, str(cache), str(out), "1" if attempt else "0"], env=env)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if folder.is_dir() and sum(1 for _ in os.scandir(folder)) >= 50:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            killed_at = sum(1 for p in folder.iterdir() if p.suffix == ".npy")
            break
    assert killed_at is not None and 0 < killed_at < n, "the export finished before it could be killed"
    with open_cache(cache) as c:
        want = {v: c.get(v, "vggish").data.astype(np.float32) for v in c.videos}
    for p in folder.glob("*.npy"):  # whatever is there under a final name is complete
        np.testing.assert_array_equal(np.load(p), want[p.stem])
    r = run_cli("export", cache, "--layout", "generic", "--feature", "vggish=vggish", "--length", "60", "-o", out,
                "--quiet")
    assert r.exit_code == 0, r.output
    written, unchanged = (int(x.split()[0]) for x in r.output.split(", ")[1:3])
    assert written + unchanged == n and unchanged >= killed_at, (written, unchanged, killed_at)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{v}.npy" for v in want)  # no temporaries left
    for v, a in want.items():
        np.testing.assert_array_equal(np.load(folder / f"{v}.npy"), a)


def test_questions_without_embeddings_are_listed(full, tmp_path):
    cache, _ = full
    q = write_questions(tmp_path / "q.json", QUESTIONS + [(99, "00000001")])
    r = run_cli("export", cache, "--layout", "pstp-net", "-o", tmp_path / "out", "--questions", q, "--quiet")
    assert r.exit_code == 1
    assert "missing: clip_qst/: 1 question(s) without a 'clip-ViT-B-32-openai' embedding, e.g. 99" in r.output
    assert (tmp_path / "out/clip_qst/14.npy").exists() and not (tmp_path / "out/clip_qst/99.npy").exists()


def test_use_maps_a_cls_and_tokens_pair(full, tmp_path):
    cache, _ = full
    r = run_cli("export", cache, "--layout", "pstp-net", "-o", tmp_path / "out", "--quiet",
                "--use", "clip_patch-level_vit_b32=clip-ViT-B-32-openai,clip-ViT-B-32-openai-tokens")
    assert r.exit_code == 0, r.output
    a = np.load(tmp_path / "out/clip_patch-level_vit_b32/00000002.npy")
    np.testing.assert_array_equal(a[:, 0], expected(cache, "00000002", "clip-ViT-B-32-openai"))
    manifest = json.loads((tmp_path / "out/featpipe-export.json").read_text())
    assert manifest["folders"]["clip_patch-level_vit_b32"]["combine"] == "cls+tokens"
