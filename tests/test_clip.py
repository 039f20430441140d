"""CLIP through open_clip: preprocessing equal to open_clip's, every tower family, tokens, the
field's layouts (PSTP-Net, TSPM), hf-hub:/local-dir: weights, and library messages."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from featpipe import cli
from clip_helpers import (FAMILIES, centre_frames, cosine, open_clip_reference, save_weights, write_config_folder,
                          write_textured_clip)
from featpipe import open_cache
from featpipe.decode import iter_chunks, probe
from featpipe.extractors import Chunk, ExtractorError, WeightsError, build
from featpipe.extractors.base import ExtractOptions

OPENAI = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711)}


@pytest.fixture(scope="module")
def cfg_dir(tmp_path_factory):
    return write_config_folder(tmp_path_factory.mktemp("clipfam"))


@pytest.fixture(autouse=True)
def families(cfg_dir, monkeypatch):
    monkeypatch.setenv("FEATPIPE_OPENCLIP_CONFIGS", str(cfg_dir))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texvid")
    return write_textured_clip(folder / "tex.mp4")


def _local_dir(folder, model: str, preprocess: dict, weights_seed: int = 1):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": FAMILIES[model],
                                                              "preprocess_cfg": preprocess}))
    save_weights(model, folder / "open_clip_model.safetensors", seed=weights_seed)
    return folder


def _decoded(ext, path) -> np.ndarray:
    """The frames featpipe's decoder hands this extractor (native size, segment centres)."""
    from featpipe.decode import DecodeParams

    info = probe(str(path))
    return np.concatenate([c.frames[0.5] for c in iter_chunks(info, ext.needs(), DecodeParams(), "v", 3)])


# -- preprocessing ----------------------------------------------------------------------------------
PREPROCESS_CASES = [
    ("tiny-vit", {"resize_mode": "shortest", "interpolation": "bicubic"}),
    ("tiny-vit", {"resize_mode": "shortest", "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}),
    ("tiny-vit", {"resize_mode": "squash", "interpolation": "bicubic"}),
    ("tiny-vit", {"resize_mode": "squash", "interpolation": "bilinear", "mean": [0, 0, 0], "std": [1, 1, 1]}),
    ("tiny-vit", {"resize_mode": "longest", "interpolation": "bicubic", "fill_color": 0}),
    ("tiny-rn", {"resize_mode": "shortest", "interpolation": "bilinear"}),
]


@pytest.mark.parametrize("model,pre", PREPROCESS_CASES, ids=[f"{m}-{p['resize_mode']}-{p['interpolation']}"
                                                             for m, p in PREPROCESS_CASES])
def test_preprocessing_equals_open_clips_transform(model, pre, video, tmp_path):
    """featpipe's model input equals create_model_and_transforms' transform on the same decoded frame."""
    import open_clip

    folder = _local_dir(tmp_path / "m", model, pre)
    ext = build(f"clip:local-dir:{folder}")
    ext.check()
    ext.load("cpu")
    frames = _decoded(ext, video)
    assert frames.shape[1:] == (180, 320, 3)  # native size: the decoder did not scale them
    assert np.array_equal(frames, centre_frames(video))
    _, _, ref_tf = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    ref = torch.stack([ref_tf(Image.fromarray(f)) for f in frames])
    got = ext.preprocess(frames)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert torch.equal(got, ref)  # pixel by pixel, bit for bit


def test_tag_preprocessing_reaches_the_model(tmp_path):
    """A tag's preprocessing (passed as force_preprocess) ends up as the model's preprocess_cfg."""
    from featpipe.models.clip_config import normalise_preprocess
    from featpipe.models.clip_towers import build_model

    siglip = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic", "resize_mode": "squash"}
    m = build_model("tiny-vit", None, "cpu", "fp32", force_preprocess=siglip)
    assert normalise_preprocess(m.visual.preprocess_cfg) == normalise_preprocess(
        {"size": 32, "mode": "RGB", "fill_color": 0, **siglip})


def test_a_tags_preprocessing_and_weights_through_load(video, tmp_path, monkeypatch):
    """A pretrained tag (registered here with a local file) gets the tag's preprocessing, as
    open_clip's own create_model_and_transforms(model, pretrained=tag) gives it."""
    import open_clip.pretrained as ocp

    ckpt = save_weights("tiny-vit", tmp_path / "w.safetensors", seed=6)
    tag = {"file": str(ckpt), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear",
           "resize_mode": "squash"}
    monkeypatch.setitem(ocp._PRETRAINED, "tiny-vit", {"faketag": tag})
    ext = build("clip:tiny-vit/faketag")
    ext.check()
    ext.load("cpu")
    frames = centre_frames(video)
    model, ref_x, ref = open_clip_reference("tiny-vit", "faketag", frames)
    assert model.visual.preprocess_cfg["resize_mode"] == "squash"
    assert torch.equal(ext.preprocess(frames), ref_x)
    np.testing.assert_allclose(ext.extract(_chunk(frames))["clip-tiny-vit-faketag"], ref, rtol=1e-5, atol=1e-6)


# the real configs resolve without weights, with open_clip's preprocessing for their tags
REAL = {
    "RN50-quickgelu/openai": ("ModifiedResNet", 1024, None, {**OPENAI, "interpolation": "bicubic", "resize_mode": "shortest",
                                                   "size": (224, 224)}),
    "ViT-B-16-SigLIP/webli": ("TimmModel/VisionTransformer", 768, (196, 768),
                              {"mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic",
                               "resize_mode": "squash", "size": (224, 224)}),
    "convnext_base/laion400m_s13b_b51k": ("TimmModel/ConvNeXt", 512, None,
                                          {**OPENAI, "interpolation": "bicubic", "resize_mode": "shortest",
                                           "size": (224, 224)}),
    "ViT-B-32-quickgelu/openai": ("VisionTransformer", 512, (49, 512),
                                  {**OPENAI, "interpolation": "bicubic", "resize_mode": "shortest", "size": (224, 224)}),
    "ViT-L-14-336-quickgelu/openai": ("VisionTransformer", 768, (576, 768),
                                      {**OPENAI, "interpolation": "bicubic", "resize_mode": "shortest",
                                       "size": (336, 336)}),
}


@pytest.mark.parametrize("spec", list(REAL))
def test_real_configs_resolve_without_weights(spec):
    family, dim, tokens, pre = REAL[spec]
    ext = build(f"clip:{spec}")
    for k, v in pre.items():
        assert ext.preprocess_cfg[k] == pytest.approx(v) if k in ("mean", "std") else ext.preprocess_cfg[k] == v, k
    assert ext.tower.family == family and ext.tower.embed_dim == dim and ext.tower.token_shape == tokens
    assert ext.outputs()[0].shape == (dim,)
    with pytest.raises(WeightsError) as err:  # offline: one line saying how to get them
        ext.check()
    assert "\n" not in str(err.value) and "create_model" in str(err.value)
    tok = build(f"clip:{spec}", ExtractOptions(tokens=True))
    if tokens is None:
        with pytest.raises(ExtractorError, match="has no patch tokens") as err:
            tok.check()  # before the weights are looked for
        assert "\n" not in str(err.value)
    else:
        assert tok.outputs()[1].shape == tokens


def test_openai_tag_on_a_gelu_config_warns_once_on_the_client(tmp_path):
    ckpt = save_weights("tiny-vit", tmp_path / "w.safetensors")
    ext = build("clip:ViT-B-32/openai")
    with pytest.warns(UserWarning, match="use clip:ViT-B-32-quickgelu/openai"), pytest.raises(WeightsError):
        ext.check()  # the warning comes before the (offline) weights are found missing
    assert build("clip:ViT-B-32-quickgelu/openai").source.quick_gelu_mismatch() is None
    assert build(f"clip:tiny-vit/{ckpt}").source.quick_gelu_mismatch() is None


# -- every family, through featpipe extract ------------------------------------------------------
def test_four_families_through_featpipe_extract(video, tmp_path):
    """ViT and ModifiedResNet checkpoints, timm ViT (MAP pool) and timm ConvNeXt with random weights:
    the stored embeddings equal open_clip's own transform + encode_image on PyAV's frames."""
    vit = save_weights("tiny-vit", tmp_path / "vit.safetensors", seed=3)
    rn = save_weights("tiny-rn", tmp_path / "rn.safetensors", seed=4)
    specs = {f"clip:tiny-vit/{vit}": ("clip-tiny-vit-vit", "tiny-vit", str(vit)),
             f"clip:tiny-rn/{rn}": ("clip-tiny-rn-rn", "tiny-rn", str(rn)),
             "clip:tiny-siglip/random": ("clip-tiny-siglip-random", "tiny-siglip", None),
             "clip:tiny-convnext/random": ("clip-tiny-convnext-random", "tiny-convnext", None)}
    cache = tmp_path / "c.h5"
    args = ["extract", str(video), "-o", str(cache), "--workers", "1", "--quiet", "--dtype", "float32"]
    for s in specs:
        args += ["--visual", s]
    res = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    frames = centre_frames(video)
    with open_cache(cache) as c:
        for spec, (feature, model, ckpt) in specs.items():
            got = c.get("tex", feature).data
            _, _, ref = open_clip_reference(model, ckpt, frames)
            assert got.shape == ref.shape == (3, FAMILIES[model]["embed_dim"])
            assert cosine(got, ref).min() >= 0.9999, spec
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_tokens_on_a_cnn_tower_is_one_line_at_start_up(video, tmp_path):
    res = CliRunner().invoke(cli.main, ["extract", str(video), "-o", str(tmp_path / "c.h5"), "--workers", "1",
                                        "--quiet", "--tokens", "--visual", "clip:tiny-rn/random"])
    assert res.exit_code != 0
    lines = [x for x in res.output.splitlines() if "patch tokens" in x]
    assert len(lines) == 1 and "ModifiedResNet" in lines[0]


# -- tokens, and the field's layouts --------------------------------------------------------------
def _pstp_forward(visual, x):
    """PSTP-Net's patch-level CLIP, written out on open_clip's modules: every token through ln_post, @ proj."""
    t = visual.conv1(x).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(t.dtype).expand(t.shape[0], 1, -1)
    t = torch.cat([cls, t], 1) + visual.positional_embedding
    t = visual.transformer(visual.ln_pre(t))
    return visual.ln_post(t) @ visual.proj


def _chunk(frames):
    return Chunk("v", 0, len(frames), 1.0, float(len(frames)), frames={0.5: frames})


@pytest.mark.parametrize("model", ["tiny-vit", "ViT-B-32-quickgelu"])
def test_pstp_layout_equals_an_independent_forward(model, video):
    """--tokens --set token_layout=cls+patches: (1+N, D), row 0 the image embedding, as PSTP-Net stores.

    The reference is PSTP-Net's forward written out on the loaded model's modules, fed by
    open_clip's own transform; the pooled row is open_clip's encode_image."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    frames = centre_frames(video)[:2]
    ext = build(f"clip:{model}/random", ExtractOptions(tokens=True, extra=(("token_layout", "cls+patches"),)))
    ext.load("cpu")
    out = ext.extract(_chunk(frames))
    name = f"clip-{model}-random"
    got, pooled = out[name + "-cls-tokens"], out[name]
    tf = image_transform_v2(PreprocessCfg(**ext.model.visual.preprocess_cfg), is_train=False)
    x = torch.stack([tf(Image.fromarray(f)) for f in frames])
    with torch.no_grad():
        ref, ref_pooled = _pstp_forward(ext.model.visual, x).numpy(), ext.model.encode_image(x).numpy()
    if model == "ViT-B-32-quickgelu":
        assert got.shape == (2, 50, 512)  # PSTP-Net's clip_patch-level_vit_b32 rows
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(pooled, ref_pooled, rtol=1e-4, atol=1e-5 * np.abs(ref_pooled).max())
    assert np.array_equal(got[:, 0], pooled)
    if model == "tiny-vit":  # the default layout holds the same patch rows; the weights equal open_clip's seeded ones
        _, _, seeded = open_clip_reference(model, None, frames)
        np.testing.assert_allclose(pooled, seeded, rtol=1e-5, atol=1e-6)
        plain = build(f"clip:{model}/random", ExtractOptions(tokens=True))
        plain.load("cpu")
        assert np.array_equal(plain.extract(_chunk(frames))[name + "-tokens"], got[:, 1:])


def test_timm_vit_tokens_and_pooled_equal_timm_and_open_clip(video):
    """timm tower: pooled = encode_image; tokens = the trunk's normed last block without prefix tokens."""
    frames = centre_frames(video)[:2]
    ext = build("clip:tiny-siglip/random", ExtractOptions(tokens=True))
    ext.load("cpu")
    out = ext.extract(_chunk(frames))
    m, x, ref_pooled = open_clip_reference("tiny-siglip", None, frames)
    with torch.no_grad():
        inter = m.visual.trunk.forward_intermediates(x, indices=1, norm=True, output_fmt="NLC",
                                                     intermediates_only=True)[-1]
    assert out["clip-tiny-siglip-random-tokens"].shape == (2, 100, 64) == tuple(inter.shape)
    np.testing.assert_allclose(out["clip-tiny-siglip-random-tokens"], inter.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["clip-tiny-siglip-random"], ref_pooled, rtol=1e-4, atol=1e-6)
    assert ext.outputs()[1].attrs["grid"] == [10, 10]


def test_chunked_extraction_equals_whole(video):
    frames = centre_frames(video)
    ext = build("clip:tiny-vit/random", ExtractOptions(tokens=True, batch_size=2))
    ext.load("cpu")
    whole = ext.extract(_chunk(frames))
    parts = [ext.extract(Chunk("v", i, 1, 1.0, 3.0, frames={0.5: frames[i:i + 1]})) for i in range(3)]
    for k, v in whole.items():
        np.testing.assert_allclose(np.concatenate([p[k] for p in parts]), v, rtol=1e-5, atol=1e-6)


# -- open_clip's ways of naming weights -----------------------------------------------------------
def test_hf_hub_from_an_offline_cache(video, tmp_path, monkeypatch):
    import huggingface_hub.constants as hfc
    import open_clip

    hub = tmp_path / "hub"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = hub / "models--someorg--tiny-clip" / "snapshots" / rev
    _local_dir(snap, "tiny-vit", {"resize_mode": "squash", "interpolation": "bilinear"}, weights_seed=5)
    (hub / "models--someorg--tiny-clip" / "refs").mkdir()
    (hub / "models--someorg--tiny-clip" / "refs" / "main").write_text(rev)
    for k, v in {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    ext = build("clip:hf-hub:someorg/tiny-clip")
    ext.check()
    assert ext.outputs()[0].name == "clip-hf-someorg-tiny-clip"
    assert ext.preprocess_cfg["resize_mode"] == "squash" and ext.preprocess_cfg["interpolation"] == "bilinear"
    ext.load("cpu")
    frames = centre_frames(video)
    got = ext.extract(_chunk(frames))["clip-hf-someorg-tiny-clip"]
    model, _, tf = open_clip.create_model_and_transforms("hf-hub:someorg/tiny-clip")  # open_clip's own hf path
    x = torch.stack([tf(Image.fromarray(f)) for f in frames])
    assert torch.equal(ext.preprocess(frames), x)
    with torch.no_grad():
        ref = model.eval().encode_image(x).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert ext.weights_identity().startswith("sha256:")
    with pytest.raises(WeightsError, match="no network"):
        build("clip:hf-hub:someorg/absent")


def test_local_dir_without_weights_or_config_is_one_line(tmp_path):
    with pytest.raises(WeightsError, match="open_clip_config.json"):
        build(f"clip:local-dir:{tmp_path}")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": FAMILIES["tiny-vit"]}))
    with pytest.raises(WeightsError, match="has no weights"):
        build(f"clip:local-dir:{tmp_path}").check()


# -- options and library messages ----------------------------------------------------------------
def test_declared_options_and_version():
    ext = build("clip:tiny-vit/random", ExtractOptions(extra=(("precision", "fp32"),)))
    assert ext.version == "2" and set(ext.option_specs) == {"precision", "token_layout"}
    assert ext.resolved_options() == {"precision": "fp32", "token_layout": "patches"}
    with pytest.raises(ExtractorError, match="token_layout"):
        build("clip:tiny-vit/random", ExtractOptions(extra=(("token_layout", "grid"),))).opt("token_layout")


def test_library_warnings_reach_the_user_once_and_logging_is_untouched(tmp_path, caplog, capsys):
    folder = _local_dir(tmp_path / "m", "tiny-vit", {})
    save_weights("tiny-vit", folder / "b.safetensors")  # open_clip warns about several checkpoints
    (folder / "open_clip_model.safetensors").rename(folder / "a.safetensors")
    root = logging.getLogger()
    before = (root.level, list(root.handlers), list(root.filters), logging.getLogger("timm").propagate)
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="featpipe.clip"):
        for _ in range(2):  # two loads in one process (e.g. two videos' worth of extractors)
            ext = build(f"clip:local-dir:{folder}")
            ext.check()
            ext.load("cpu")
    assert ext._file.endswith("a.safetensors")
    hits = [r for r in caplog.records if "Multiple checkpoints" in r.getMessage()]
    assert len(hits) == 1 and hits[0].name == "featpipe.clip"
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    assert (root.level, list(root.handlers), list(root.filters), logging.getLogger("timm").propagate) == before
    assert "WARNING:root" not in capsys.readouterr().err
