"""Each layout end to end with the real extractors: `featpipe synth` -> `featpipe extract` ->
`featpipe encode-text --field-tables` -> `featpipe export --layout X` -> that project's loader
(AVST, PSTP-Net, TSPM, QA-TIGER, and MCCD through `--layout generic`).

The commands are the ones docs/features.md gives per method (``LAYOUT_COMMANDS``), with the model
weights swapped for random or tiny ones through the ways each extractor documents (:func:`tiny`):
VGGish, ResNet-18 and R(2+1)D-18 read random state dicts written under their official file names in
``$FEATPIPE_WEIGHTS``; CLIP models are tiny open_clip configs named ``ViT-B-32-tiny`` and
``ViT-L-14-336-tiny`` with the real embedding widths (512, 768) and ViT-B/32's 7 x 7 patch grid,
registered through ``FEATPIPE_OPENCLIP_CONFIGS``; ``tome14`` keeps its spec while a
``FEATPIPE_TIMM_CONFIGS`` variant of ``vit_large_patch16_384`` makes it a 2-block, 1024-wide,
64-px ViT whose 17 tokens ToMe merges to 14 (``--set tome_r=3 --set tome_layers=1``: the real
577 -> 14 schedule needs all 24 ViT-L blocks, minutes here). So the layout tables match the
features by their real names and row shapes, and nothing is mapped by hand.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from featpipe import open_cache
from featpipe.extractors import r2plus1d_18 as r21
from featpipe.extractors import resnet18_14x14 as res
from featpipe.models import vggish as vg
from test_interop import avst_items, expected, expected_text, pstp_items, qa_tiger_items, run_cli, tspm_items

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test here starts real Dask worker processes


def _clip_cfg(embed: int, image: int) -> dict:
    """A 1-layer open_clip ViT (patch 8) with a full 77-token text tower; ``embed`` as the real model's."""
    return {"embed_dim": embed,
            "vision_cfg": {"image_size": image, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


CLIP_CONFIGS = {"ViT-B-32-tiny": _clip_cfg(512, 56),  # 56 / 8 = 7: ViT-B/32's 49 patches
                "ViT-L-14-336-tiny": _clip_cfg(768, 32)}
TOME_VARIANT = {"model": "vit_large_patch16_384",  # 64 px / 16 = 4 x 4 patches + CLS = 17 tokens
                "kwargs": {"img_size": 64, "embed_dim": 1024, "depth": 2, "num_heads": 2, "mlp_ratio": 0.0625}}
TINY_SPECS = {"clip:ViT-B-32-quickgelu/openai": "clip:ViT-B-32-tiny/random",
              "clip:ViT-L-14-336-quickgelu/openai": "clip:ViT-L-14-336-tiny/random",
              "tome14": "tome14:random"}
TOME_TINY_SET = ["--set", "tome_r=3", "--set", "tome_layers=1"]  # 17 -> 14 tokens in one block

# The commands of docs/features.md's method table (VIDEOS, CACHE, Q.json, OUT are placeholders;
# tests/test_field_sets.py checks that the table shows exactly these).
EXTRACT = "featpipe extract VIDEOS -o CACHE --fps 1 --max-seconds 60"
LAYOUT_COMMANDS = {
    "avst": [f"{EXTRACT} --audio vggish --visual resnet18-14x14",
             "featpipe export CACHE --layout avst -o OUT --questions Q.json"],
    "pstp-net": [f"{EXTRACT} --audio vggish --visual clip:ViT-B-32-quickgelu/openai --tokens",
                 "featpipe encode-text CACHE --questions Q.json --text-encoder clip:ViT-B-32-quickgelu/openai --field-tables",
                 "featpipe export CACHE --layout pstp-net -o OUT --questions Q.json"],
    "tspm": [f"{EXTRACT} --audio vggish --visual clip:ViT-L-14-336-quickgelu/openai --visual tome14",
             "featpipe encode-text CACHE --questions Q.json --text-encoder clip:ViT-L-14-336-quickgelu/openai --field-tables",
             "featpipe export CACHE --layout tspm -o OUT --questions Q.json"],
    "qa-tiger": [f"{EXTRACT} --audio vggish --visual clip:ViT-L-14-336-quickgelu/openai --visual tome14",
                 "featpipe export CACHE --layout qa-tiger -o QA-TIGER/data"],
    "mccd": [f"{EXTRACT} --audio vggish --visual r2plus1d-18",
             "featpipe export CACHE --layout generic --feature vggish=vggish --feature r2plus1d-18=r2plus1d_18 "
             "--length 60 -o OUT"],
}


def field_weights(tmp_path_factory) -> Path:
    """Random VGGish, ResNet-18 and R(2+1)D-18 state dicts under their official names (once per session)."""
    import torchvision
    from test_resnet import random_resnet18_state
    from test_vggish import he_state

    folder = tmp_path_factory.getbasetemp() / "field-weights"
    if not (folder / r21.WEIGHTS_FILE).exists():
        folder.mkdir(exist_ok=True)
        torch.save(he_state(), folder / vg.MODEL_FILE)
        torch.save(random_resnet18_state(), folder / res.WEIGHTS_FILE)
        torch.save(random_resnet18_state(1, torchvision.models.video.r2plus1d_18), folder / r21.WEIGHTS_FILE)
    return folder


def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    """The CLIP configs and the ToMe variant, as JSON folders (written once per session)."""
    clip, timm = (tmp_path_factory.getbasetemp() / n for n in ("field-clip", "field-timm"))
    for folder in (clip, timm):
        folder.mkdir(exist_ok=True)
    for name, cfg in CLIP_CONFIGS.items():
        (clip / f"{name}.json").write_text(json.dumps(cfg))
    (timm / "vit_large_patch16_384.json").write_text(json.dumps(TOME_VARIANT))
    return clip, timm


def use_tiny_models(monkeypatch, tmp_path_factory) -> None:
    clip, timm = tiny_models(tmp_path_factory)
    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(field_weights(tmp_path_factory)))
    monkeypatch.setenv("FEATPIPE_OPENCLIP_CONFIGS", str(clip))
    monkeypatch.setenv("FEATPIPE_TIMM_CONFIGS", str(timm))
    monkeypatch.setenv("FEATPIPE_NO_DOWNLOAD", "1")


def tiny(command: str, **paths: Path) -> list[str]:
    """A documented command as argv for the CLI: placeholders filled, weights swapped (module doc)."""
    argv = shlex.split(command)
    assert argv[0] == "featpipe", command
    out = []
    for arg in argv[1:]:
        out.append(str(paths.get(arg, TINY_SPECS.get(arg, arg))))
    if argv[1] == "extract":
        out += ["--workers", "1", "--quiet"] + (TOME_TINY_SET if "tome14" in argv else [])
    if argv[1] == "export":
        out += ["--quiet"]
    return out


def run_documented(command: str, **paths: Path):
    r = run_cli(*tiny(command, **paths))
    assert r.exit_code == 0, f"{command}\n{r.output}"
    return r


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """Two 2-second synthetic music videos with MUSIC-AVQA questions (train 1 video, test 1)."""
    out = tmp_path_factory.mktemp("synth")
    r = run_cli("synth", out, "--videos", "2", "--seconds", "2", "--seed", "3")
    assert r.exit_code == 0, r.output
    q = out / "q.json"  # one question file over both videos, as a loader's label file
    q.write_text(json.dumps([s for part in ("train", "val", "test") if (out / f"avqa-{part}.json").exists()
                             for s in json.loads((out / f"avqa-{part}.json").read_text())]))
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    use_tiny_models(mp, tmp_path_factory)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def l14_cache(env, synth, tmp_path_factory) -> Path:
    """TSPM's and QA-TIGER's features (the same extract command), with the ViT-L text tables."""
    cache = tmp_path_factory.mktemp("tspm") / "c.h5"
    for command in LAYOUT_COMMANDS["tspm"][:2]:
        run_documented(command, VIDEOS=synth / "videos", CACHE=cache, **{"Q.json": synth / "q.json"})
    return cache


def _samples(synth: Path) -> list[dict]:
    return json.loads((synth / "q.json").read_text())


def _text_rows(cache: Path, table: str, qids) -> np.ndarray:
    with open_cache(cache) as c:
        return c.text_embeddings(table, question_ids=list(qids))


def test_avst_end_to_end(env, synth, tmp_path):
    cache, out = tmp_path / "c.h5", tmp_path / "feats"
    paths = dict(VIDEOS=synth / "videos", CACHE=cache, OUT=out, **{"Q.json": synth / "q.json"})
    for command in LAYOUT_COMMANDS["avst"]:
        run_documented(command, **paths)
    samples = _samples(synth)
    items = list(avst_items(str(out / "vggish"), str(out / "res18_14x14"), samples))
    batch = default_collate(items)
    assert batch["audio"].shape == (len(samples), 10, 128) and batch["audio"].dtype == torch.float32
    assert batch["visual_posi"].shape == batch["visual_nega"].shape == (len(samples), 10, 512, 14, 14)
    for s, item in zip(samples, items):
        np.testing.assert_array_equal(item["audio"].numpy(), expected(cache, s["video_id"], "vggish")[::6])
        np.testing.assert_array_equal(item["visual_posi"], expected(cache, s["video_id"], "resnet18-14x14")[::6])
    a = np.load(out / "vggish" / f"{samples[0]['video_id']}.npy")
    assert a.shape == (60, 128) and (a[2:] == a[1]).all() and not (a[0] == a[1]).all()  # 2 s, then repeated


def test_pstp_net_end_to_end(env, synth, tmp_path):
    """`--tokens` (patches) + the image embedding give the (60, 50, 512) CLS + patches file; the
    question folders come from `encode-text --field-tables`' -qst and -words tables."""
    cache, out = tmp_path / "c.h5", tmp_path / "feats"
    paths = dict(VIDEOS=synth / "videos", CACHE=cache, OUT=out, **{"Q.json": synth / "q.json"})
    for command in LAYOUT_COMMANDS["pstp-net"]:
        run_documented(command, **paths)
    manifest = json.loads((out / "featpipe-export.json").read_text())
    assert manifest["folders"]["clip_patch-level_vit_b32"]["features"] == [
        "clip-ViT-B-32-tiny-random", "clip-ViT-B-32-tiny-random-tokens"]
    assert manifest["texts"]["clip_qst"]["table"] == "clip-ViT-B-32-tiny-random-qst"
    assert manifest["texts"]["clip_word"]["table"] == "clip-ViT-B-32-tiny-random-words"
    args = {"audios_feat_dir": str(out / "vggish"), "clip_vit_b32_dir": str(out / "clip_patch-level_vit_b32"),
            "clip_qst_dir": str(out / "clip_qst"), "clip_word_dir": str(out / "clip_word")}
    samples = _samples(synth)
    items = list(pstp_items(args, samples))
    batch = default_collate(items)
    n = len(samples)
    assert batch["visual_feat"].shape == (n, 60, 512) and batch["patch_feat"].shape == (n, 60, 49, 512)
    assert batch["question"].shape == (n, 1, 512) and batch["qst_word"].shape == (n, 1, 77, 512)
    qids = [s["question_id"] for s in samples]
    qst = _text_rows(cache, "clip-ViT-B-32-tiny-random-qst", qids)
    plain = _text_rows(cache, "clip-ViT-B-32-tiny-random", qids)
    words = _text_rows(cache, "clip-ViT-B-32-tiny-random-words", qids)
    np.testing.assert_array_equal(batch["question"][:, 0].numpy(), qst)
    assert not np.allclose(qst, plain)  # the field's text ("?" dropped), not the plain question table
    np.testing.assert_array_equal(batch["qst_word"].reshape(n, -1).numpy(), words.reshape(n, -1))
    for s, item in zip(samples, items):
        v = s["video_id"]
        np.testing.assert_array_equal(item["visual_feat"].numpy(), expected(cache, v, "clip-ViT-B-32-tiny-random"))
        np.testing.assert_array_equal(item["patch_feat"].numpy(), expected(cache, v, "clip-ViT-B-32-tiny-random-tokens"))
        assert not np.array_equal(item["patch_feat"][:, 0], item["visual_feat"])  # real patches, not the CLS again


def test_tspm_end_to_end(l14_cache, synth, tmp_path):
    out = tmp_path / "feats"
    run_documented(LAYOUT_COMMANDS["tspm"][2], CACHE=l14_cache, OUT=out, **{"Q.json": synth / "q.json"})
    manifest = json.loads((out / "featpipe-export.json").read_text())
    texts = {k: v["table"] for k, v in manifest["texts"].items()}
    assert texts == {"clip_feats/qst_ViT-L14@336px": "clip-ViT-L-14-336-tiny-random-qst",
                     "clip_feats/qaPrompt_ViT-L14@336px": "clip-ViT-L-14-336-tiny-random-qaprompt"}
    args = {"audios_feat_dir": out / "vggish", "visual_feat_dir": out / "clip_feats/frame_1fps_ViT-L14@336px",
            "audios_patch_dir": out / "ToMe_feat/audio_tome14", "visual_patch_dir": out / "ToMe_feat/tome14",
            "qst_feat_dir": out / "clip_feats/qst_ViT-L14@336px",
            "qst_prompt_dir": out / "clip_feats/qaPrompt_ViT-L14@336px"}
    samples = _samples(synth)
    items = list(tspm_items({k: str(v) for k, v in args.items()}, samples))
    batch = default_collate(items)
    n = len(samples)
    assert batch["audios_feat"].shape == batch["audios_patch_feat"].shape == (n, 60, 128)
    assert batch["visual_feat"].shape == (n, 60, 768) and batch["visual_patch_feat"].shape == (n, 60, 14, 1024)
    assert batch["question_feat"].shape == batch["question_prompt"].shape == (n, 1, 768)
    torch.nn.Linear(1024, 8)(batch["visual_patch_feat"])  # nets/net.py takes the ToMe tokens as float32
    qids = [s["question_id"] for s in samples]
    prompts = _text_rows(l14_cache, "clip-ViT-L-14-336-tiny-random-qaprompt", qids)
    np.testing.assert_array_equal(batch["question_prompt"][:, 0].numpy(), prompts)
    np.testing.assert_array_equal(batch["question_feat"][:, 0].numpy(),
                                  _text_rows(l14_cache, "clip-ViT-L-14-336-tiny-random-qst", qids))
    assert not np.allclose(prompts, batch["question_feat"][:, 0].numpy())
    for s, item in zip(samples, items):
        v = s["video_id"]
        np.testing.assert_array_equal(item["visual_feat"].numpy(), expected(l14_cache, v, "clip-ViT-L-14-336-tiny-random"))
        np.testing.assert_array_equal(item["visual_patch_feat"].numpy(),
                                      expected(l14_cache, v, "tome14-vit_large_patch16_384-random"))
        np.testing.assert_array_equal(item["audios_patch_feat"].numpy(), expected(l14_cache, v, "vggish"))


def test_qa_tiger_end_to_end(l14_cache, synth, tmp_path):
    """QA-TIGER's extract command is TSPM's: rerun on the same cache it computes nothing."""
    r = run_documented(LAYOUT_COMMANDS["qa-tiger"][0], VIDEOS=synth / "videos", CACHE=l14_cache)
    assert "done 0, skipped 2" in r.output
    root = tmp_path / "QA-TIGER"
    run_documented(LAYOUT_COMMANDS["qa-tiger"][1], CACHE=l14_cache, **{"QA-TIGER/data": root / "data"})
    data = {"audio_feat": "./feats/vggish", "video_feat": "./feats/frame_ViT-L14@336px",
            "patch_feat": "./feats/visual_tome14"}  # configs/qa-tiger/vitl14.py, under data.root './data'
    samples = _samples(synth)
    batch = default_collate(list(qa_tiger_items(root / "./data", data, samples)))
    n = len(samples)
    assert batch["video"].shape == (n, 60, 768) and batch["patch"].shape == (n, 60, 14, 1024)
    assert batch["audio"].shape == (n, 60, 128)
    v = samples[-1]["video_id"]
    np.testing.assert_array_equal(batch["patch"][-1].numpy(), expected(l14_cache, v, "tome14-vit_large_patch16_384-random"))
    qid = samples[0]["question_id"]  # the optional question folders (its configs/tspm config) from -qst
    np.testing.assert_array_equal(np.load(root / f"data/feats/qst_ViT-L14@336px/{qid}.npy")[0],
                                  expected_text(l14_cache, "clip-ViT-L-14-336-tiny-random-qst", qid))


def mccd_items(config: dict, samples: list[dict]):
    """MUSIC-AVQA-R dataset/avqa_dataset.py AVQA_dataset.__getitem__ (the feature lines), sample False."""
    for sample in samples:
        name = sample["video_id"]
        audio_emb = np.load(os.path.join(config["path"]["audio_feat"], name + ".npy"))
        video_emb = np.load(os.path.join(config["path"]["video_feat"], name + ".npy"))
        audio_emb = torch.from_numpy(audio_emb)
        video_emb = torch.from_numpy(video_emb)
        yield {"audio_emb": audio_emb, "audio_token_type": torch.ones(audio_emb.shape[0], dtype=torch.long),
               "video_emb": video_emb, "video_token_type": torch.ones(video_emb.shape[0], dtype=torch.long)}


def test_mccd_end_to_end(env, synth, tmp_path):
    """MCCD reads vggish/ and r2plus1d_18/ (option.yaml); the generic export writes them."""
    cache, out = tmp_path / "c.h5", tmp_path / "feats"
    for command in LAYOUT_COMMANDS["mccd"]:
        run_documented(command, VIDEOS=synth / "videos", CACHE=cache, OUT=out)
    config = {"path": {"audio_feat": str(out / "vggish") + "/", "video_feat": str(out / "r2plus1d_18") + "/"}}
    samples = _samples(synth)
    batch = default_collate(list(mccd_items(config, samples)))
    n = len(samples)
    assert batch["audio_emb"].shape == (n, 60, 128) and batch["video_emb"].shape == (n, 60, 512)
    torch.nn.Linear(128, 768)(batch["audio_emb"]), torch.nn.Linear(512, 768)(batch["video_emb"])  # model/net.py
    for s, a, v in zip(samples, batch["audio_emb"], batch["video_emb"]):
        np.testing.assert_array_equal(a.numpy(), expected(cache, s["video_id"], "vggish"))
        np.testing.assert_array_equal(v.numpy(), expected(cache, s["video_id"], "r2plus1d-18"))
