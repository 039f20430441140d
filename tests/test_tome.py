"""ToMe-14 (TSPM / QA-TIGER): Token Merging on a timm ViT, TSPM's preprocessing, weights, pipeline.

References built here, independently of featpipe's code:
- r = 0: timm's own ``forward_features`` / ``forward`` (head identity, ``global_pool = None``);
- r > 0: a hand-worked 5-token merge, a loop-by-loop numpy bipartite matching, and a float64
  numpy ViT forward with ToMe written from the paper (tolerance: cosine >= 0.9999 per token and
  max abs diff <= 1e-4, float32 vs float64);
- preprocessing: torchvision's ``Resize(438, BICUBIC) + CenterCrop(384) + ToTensor + Normalize`` on
  a PIL image, exactly as TSPM's script calls it (max abs diff 0).
Models are tiny timm ``VisionTransformer`` variants declared through ``FEATPIPE_TIMM_CONFIGS``
(the same class and code path as ``vit_large_patch16_384``); weight files are written by timm's
own ``state_dict`` (the official layout, head included).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.special import erf

from featpipe import cli
from featpipe import open_cache
from featpipe.decode import DecodeParams, count_segments, iter_chunks, merge_needs, probe
from featpipe.extractors import ExtractOptions, WeightsError, build
from featpipe.extractors.base import Chunk
from featpipe.extractors.tome import preprocess_pil
from featpipe.models.tome import bipartite_matching, merge_schedule, merge_weighted, token_counts, tome_tokens
from featpipe.models.weights import sha256_file
from media import write_clip

TINY = {"model": "vit_large_patch16_384", "kwargs": {"img_size": 64, "embed_dim": 32, "depth": 3, "num_heads": 2}}
DEEP = {"model": "vit_large_patch16_384", "kwargs": {"embed_dim": 16, "depth": 24, "num_heads": 2}}  # 384 px, 577 tokens


@pytest.fixture
def variants(tmp_path_factory, monkeypatch) -> Path:
    folder = tmp_path_factory.mktemp("timmcfg")
    (folder / "tiny-vit.json").write_text(json.dumps(TINY))
    (folder / "deep-vit.json").write_text(json.dumps(DEEP))
    monkeypatch.setenv("FEATPIPE_TIMM_CONFIGS", str(folder))
    return folder


def _opts(**kv) -> ExtractOptions:
    return ExtractOptions(extra=tuple((k, str(v)) for k, v in kv.items()))


def _tiny_vit(seed: int = 0, **kw):
    import timm

    torch.manual_seed(seed)
    vit = timm.create_model(TINY["model"], pretrained=False, num_classes=0, **dict(TINY["kwargs"], **kw)).eval()
    with torch.no_grad():  # timm's init leaves biases and norms at 0/1: make every parameter matter
        for p in vit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vit


# ----------------------------------------------------------------------------- the merge rule


def test_token_count_rule_577_to_14():
    schedule = merge_schedule(25, 23, 24)
    assert schedule == [25] * 23 + [0]
    counts = token_counts(577, schedule, protected=1)
    # 21 blocks remove 25 each (577 -> 52); then r is capped at half the unprotected tokens
    assert counts[20] == 52 and counts[21] == 27 and counts[22] == 14 and counts[23] == 14
    assert token_counts(576, schedule, protected=0)[-3:] == [26, 13, 13]  # no class token: 576 -> 13
    with pytest.raises(ValueError, match="24 layers of a 12-block"):
        merge_schedule(25, 24, 12)


def test_hand_worked_merge_of_five_tokens():
    # token:    0 (class)  1       2            3       4
    metric = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [1.0, 0.1]]])
    x = torch.tensor([[[10.0], [1.0], [2.0], [3.0], [5.0]]])
    size = torch.tensor([[[1.0], [1.0], [1.0], [2.0], [3.0]]])
    # A = {0, 2, 4}, B = {1, 3}. Token 2's best partner is 3 (cos 0.8); token 4's is 1 (cos 0.995);
    # the class token 0 (cos 1 with token 1) is protected.
    m = bipartite_matching(metric, 1, protect_first=True)
    got, s = merge_weighted(x, size, m)
    # r = 1: 4 merges into 1: (1*1 + 3*5) / (1 + 3) = 4; order: kept A (0, 2), then B (1, 3)
    assert got[0, :, 0].tolist() == [10.0, 2.0, 4.0, 3.0] and s[0, :, 0].tolist() == [1.0, 1.0, 4.0, 2.0]
    for r in (2, 5):  # r = 5 is capped at (5 - 1) // 2 = 2
        got, s = merge_weighted(x, size, bipartite_matching(metric, r, protect_first=True))
        # also 2 merges into 3: (2*3 + 1*2) / 3
        torch.testing.assert_close(got[0, :, 0], torch.tensor([10.0, 4.0, 8.0 / 3.0]))
        assert s[0, :, 0].tolist() == [1.0, 4.0, 3.0]
    got, _ = merge_weighted(x, size, bipartite_matching(metric, 1, protect_first=False))
    # unprotected, token 0 (cos 1) merges into 1: (10 + 1) / 2; kept A-tokens stay in rank order (4, 2)
    assert got[0, :, 0].tolist() == [5.0, 2.0, 5.5, 3.0]


def np_tome_step(x, size, metric, r, protect=True):
    """One ToMe merge, token by token: the paper's bipartite soft matching with size-weighted means."""
    n = len(x)
    r = max(0, min(r, (n - int(protect)) // 2))
    a_set, b_set = list(range(0, n, 2)), list(range(1, n, 2))
    unit = metric / np.linalg.norm(metric, axis=1, keepdims=True)
    cos = unit[a_set] @ unit[b_set].T
    best = []
    for i, a in enumerate(a_set):
        if protect and a == 0:
            best.append((-math.inf, None))
            continue
        j = int(np.argmax(cos[i]))
        best.append((float(cos[i, j]), j))
    order = sorted(range(len(a_set)), key=lambda i: -best[i][0])
    moved = set(order[:r])
    groups = {j: [b] for j, b in enumerate(b_set)}
    for i in moved:
        groups[best[i][1]].append(a_set[i])
    kept = [a for i, a in enumerate(a_set) if i not in moved]
    if not protect:
        kept = [a_set[i] for i in order[r:]]
    new_x = [x[a] for a in kept]
    new_s = [size[a] for a in kept]
    for j in range(len(b_set)):
        members = groups[j]
        total = sum(size[t] for t in members)
        new_x.append(sum(size[t] * x[t] for t in members) / total)
        new_s.append(total)
    return np.stack(new_x), np.array(new_s)


@pytest.mark.parametrize("r", [1, 3, 8, 30])
def test_matching_equals_loop_reference_on_random_tokens(r):
    rng = np.random.default_rng(r)
    for n in (9, 16, 17):
        metric = rng.normal(size=(n, 6))
        x = rng.normal(size=(n, 5))
        size = rng.integers(1, 5, n).astype(float)
        want_x, want_s = np_tome_step(x, size, metric, r)
        m = bipartite_matching(torch.tensor(metric[None], dtype=torch.float64), r, protect_first=True)
        got_x, got_s = merge_weighted(torch.tensor(x[None]), torch.tensor(size[None, :, None]), m)
        np.testing.assert_allclose(got_x[0].numpy(), want_x, atol=1e-12)
        np.testing.assert_allclose(got_s[0, :, 0].numpy(), want_s)


# ----------------------------------------------------------------------------- the whole model


def test_r0_equals_timm_forward():
    vit = _tiny_vit()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        got = tome_tokens(vit, x, [0] * 3)
        ref = vit.forward_features(x)
        vit.global_pool = None  # TSPM: head identity, no pooling -> timm's forward returns the tokens
        ref_fwd = vit(x)
    assert got.shape == (3, 17, 32)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, ref_fwd, atol=1e-5, rtol=0)


def _np_layernorm(x, mod):
    assert math.isclose(mod.eps, 1e-6)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + mod.eps) * _w(mod.weight) + _w(mod.bias)


def _w(p):
    return p.detach().double().numpy()


def np_vit_tome(vit, image: np.ndarray, schedule, prop_attn=True) -> np.ndarray:
    """A float64 ViT forward with ToMe written from the paper, reading only the module weights."""
    pe = vit.patch_embed.proj
    p = pe.kernel_size[0]
    g = image.shape[1] // p
    patches = image.reshape(3, g, p, g, p).transpose(1, 3, 0, 2, 4).reshape(g * g, 3 * p * p)
    x = patches @ _w(pe.weight).reshape(pe.out_channels, -1).T + _w(pe.bias)
    x = np.concatenate([_w(vit.cls_token)[0], x]) + _w(vit.pos_embed)[0]
    size = np.ones(len(x))
    for blk, r in zip(vit.blocks, schedule):
        h = _np_layernorm(x, blk.norm1)
        heads, hd = blk.attn.num_heads, blk.attn.head_dim
        qkv = (h @ _w(blk.attn.qkv.weight).T + _w(blk.attn.qkv.bias)).reshape(len(x), 3, heads, hd)
        q, k, v = (qkv[:, i].transpose(1, 0, 2) for i in range(3))
        logits = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + (np.log(size)[None, None, :] if prop_attn else 0.0)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        out = (att @ v).transpose(1, 0, 2).reshape(len(x), heads * hd)
        x = x + out @ _w(blk.attn.proj.weight).T + _w(blk.attn.proj.bias)
        if r > 0:
            x, size = np_tome_step(x, size, k.mean(0), r)
        h = _np_layernorm(x, blk.norm2) @ _w(blk.mlp.fc1.weight).T + _w(blk.mlp.fc1.bias)
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = x + h @ _w(blk.mlp.fc2.weight).T + _w(blk.mlp.fc2.bias)
    return _np_layernorm(x, vit.norm)


def _cos(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("r,layers,prop", [(4, 3, True), (8, 2, True), (3, 3, False)])
def test_tome_forward_equals_numpy_reference(r, layers, prop):
    vit = _tiny_vit(seed=r)
    images = torch.randn(2, 3, 64, 64)
    schedule = merge_schedule(r, layers, 3)
    with torch.no_grad():
        got = tome_tokens(vit, images, schedule, prop_attn=prop).double().numpy()
    assert got.shape[1] == token_counts(17, schedule)[-1]
    for i in range(2):
        want = np_vit_tome(vit, images[i].double().numpy(), schedule, prop)
        assert got[i].shape == want.shape
        assert _cos(got[i], want).min() >= 0.9999
        np.testing.assert_allclose(got[i], want, atol=1e-4)
    if prop:  # the reference can tell proportional attention from plain attention
        plain = np_vit_tome(vit, images[0].double().numpy(), schedule, prop_attn=False)
        assert np.abs(plain - got[0]).max() > 1e-3


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("hw", [(360, 640), (480, 360), (438, 500), (200, 150)])
def test_preprocessing_equals_tspm_torchvision_pil_path(hw):
    from PIL import Image
    from torchvision import transforms
    from torchvision.transforms.functional import InterpolationMode

    rng = np.random.default_rng(hw[0])
    frames = rng.integers(0, 256, (2, *hw, 3), dtype=np.uint8)
    frames[:, hw[0] // 3:, : hw[1] // 2] //= 3  # some structure, so resampling filters differ
    tf = transforms.Compose([transforms.Resize(int((256 / 224) * 384), interpolation=InterpolationMode.BICUBIC),
                             transforms.CenterCrop(384), transforms.ToTensor(),
                             transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    want = np.stack([tf(Image.fromarray(f)).numpy() for f in frames])
    got = preprocess_pil(frames, 384, (0.5,) * 3, (0.5,) * 3)
    assert got.shape == (2, 3, 384, 384)
    np.testing.assert_array_equal(got, want)
    if min(hw) == 438:
        return  # no resize: nothing for the filters to differ on
    # a tensor-side bicubic (what the decoder or a GPU resize would do) is measurably different
    t = torch.from_numpy(frames).permute(0, 3, 1, 2)
    tens = transforms.CenterCrop(384)(transforms.functional.resize(t, 438, InterpolationMode.BICUBIC, antialias=True))
    assert np.abs((tens.float().numpy() / 255 - 0.5) / 0.5 - want).max() > 2 / 255


# ----------------------------------------------------------------------------- the extractor


def test_names_shapes_needs_and_models_listing(variants):
    ext = build("tome:vit_large_patch16_384")
    out = ext.outputs()[0]
    assert out.name == "tome14-vit_large_patch16_384-augreg_in21k_ft_in1k" and out.shape == (14, 1024)
    assert out.attrs["tokens_in"] == 577 and out.attrs["resize"] == 438
    needs = ext.needs()
    assert needs.frame_positions == (0.5,) and needs.native_frames
    deep = build("tome:deep-vit/random").outputs()[0]
    assert deep.name == "tome14-deep-vit-random" and deep.shape == (14, 16)
    assert build("tome:deep-vit/random", _opts(tome_r=8, tome_layers=4)).outputs()[0].shape == (577 - 32, 16)
    res = CliRunner().invoke(cli.main, ["models"])
    assert res.exit_code == 0 and "tome:<timm model>" in res.output and "ToMe-14" in res.output


def test_real_model_without_weights_is_one_line(variants, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("FEATPIPE_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsError) as err:
        build("tome:vit_large_patch16_384").check()
    msg = str(err.value)
    assert "\n" not in msg and "timm/vit_large_patch16_384.augreg_in21k_ft_in1k" in msg
    assert "--weights PATH" in msg and "huggingface-cli download" in msg
    with pytest.raises(WeightsError, match="does not exist"):
        build("tome:vit_large_patch16_384", ExtractOptions(weights=str(tmp_path / "none.safetensors"))).check()
    with pytest.raises(WeightsError, match="no pretrained weights"):
        build("tome:tiny-vit", _opts(tome_layers=3)).check()
    # the layout huggingface_hub writes: refs/main names the snapshot folder
    repo = tmp_path / "hub" / "models--timm--vit_large_patch16_384.augreg_in21k_ft_in1k"
    snap = repo / "snapshots" / ("cd" * 20)
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"stand-in")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("cd" * 20)
    ext = build("tome:vit_large_patch16_384")
    ext.check()
    assert ext.weights_identity() == "sha256:" + sha256_file(snap / "model.safetensors")


def _official_checkpoint(path: Path, kind: str) -> dict:
    """A random tiny-vit checkpoint in timm's layout (1000-class head included), as .safetensors or .pth."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    sd = timm.create_model(TINY["model"], pretrained=False, **TINY["kwargs"]).state_dict()
    sd = {k: v + 0.05 * torch.randn_like(v) for k, v in sd.items()}
    assert "head.weight" in sd and sd["head.weight"].shape[0] == 1000
    if kind == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return sd


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_checkpoint_loads_through_timm_and_matches_direct(variants, tmp_path, kind):
    path = tmp_path / f"vit.{kind}"
    sd = _official_checkpoint(path, kind)
    for ext in (build(f"tome:tiny-vit/{path}", _opts(tome_r=4, tome_layers=3)),
                build("tome:tiny-vit", ExtractOptions(weights=str(path), extra=(("tome_r", "4"), ("tome_layers", "3"))))):
        ext.check()
        assert ext.weights_identity() == "sha256:" + sha256_file(path)
        ext.load("cpu")
        loaded = ext.model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in sd.items() if not k.startswith("head"))
    frames = np.random.default_rng(3).integers(0, 256, (3, 90, 120, 3), dtype=np.uint8)
    name = ext.outputs()[0].name
    assert name == "tome5-tiny-vit-vit"
    got = ext.extract(Chunk("v", 0, 3, 1.0, 3.0, frames={0.5: frames}))[name]
    assert got.shape == (3, 5, 32) and got.dtype == np.float32
    want = [np_vit_tome(ext.model, preprocess_pil(f[None], 64, (0.5,) * 3, (0.5,) * 3)[0].astype(np.float64),
                        merge_schedule(4, 3, 3)) for f in frames]
    for g, w in zip(got, want):
        assert _cos(g, w).min() >= 0.9999


def test_full_depth_577_to_14_through_the_extractor(variants):
    ext = build("tome:deep-vit/random")
    ext.load("cpu")
    frame = np.random.default_rng(9).integers(0, 256, (1, 360, 480, 3), dtype=np.uint8)
    got = ext.extract(Chunk("v", 0, 1, 1.0, 1.0, frames={0.5: frame}))["tome14-deep-vit-random"]
    assert got.shape == (1, 14, 16)
    want = np_vit_tome(ext.model, preprocess_pil(frame, 384, (0.5,) * 3, (0.5,) * 3)[0].astype(np.float64),
                       merge_schedule(25, 23, 24))
    assert want.shape == (14, 16) and _cos(got[0], want).min() >= 0.9999


def test_chunked_equals_whole(variants):
    ext = build("tome:tiny-vit/random", ExtractOptions(batch_size=2, extra=(("tome_r", "4"), ("tome_layers", "3"))))
    ext.load("cpu")
    frames = np.random.default_rng(5).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    name = ext.outputs()[0].name
    whole = ext.extract(Chunk("v", 0, 5, 1.0, 5.0, frames={0.5: frames}))[name]
    parts = np.concatenate([ext.extract(Chunk("v", k, 1, 1.0, 5.0, frames={0.5: frames[k:k + 1]}))[name]
                            for k in range(5)])
    np.testing.assert_allclose(parts, whole, atol=1e-5)
    assert not np.allclose(whole[0], whole[1], atol=1e-3)


def test_featpipe_extract_tome_clip_and_priors_in_one_pass(variants, tiny_clip, tmp_path):
    videos = tmp_path / "clips"
    videos.mkdir()
    clip = write_clip(videos / "a.mp4", seconds=3.0, fps=10, size=(96, 64))
    cache = tmp_path / "c.h5"
    spec = "tome:tiny-vit/random"
    res = CliRunner().invoke(cli.main, [
        "extract", str(videos), "-o", str(cache), "--visual", spec, "--visual", f"clip:{tiny_clip}/random",
        "--audio", "priors", "--workers", "1", "--quiet", "--set", "tome_r=4", "--set", "tome_layers=3"],
        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    name = "tome5-tiny-vit-random"
    with open_cache(cache) as c:
        got = c.get("a", name)
        info = c.info(name)
        other = [c.get("a", n) for n in ("clip-tiny-clip-random", "priors")]
    assert info.spec == spec and info.weights == "random-init" and info.modality == "visual"
    assert got.data.shape == (3, 5, 32) and got.valid == 3
    for o in other:  # one timeline
        np.testing.assert_allclose(o.times, got.times)
    # the same rows as the extractor on the decoder's native-size frames of that file
    ext = build(spec, _opts(tome_r=4, tome_layers=3))
    ext.load("cpu")
    media = probe(str(clip))
    params = DecodeParams()
    _, valid = count_segments(media.duration, params)
    chunks = list(iter_chunks(media, merge_needs([ext.needs()]), params, "a", valid))
    assert chunks[0].frames[0.5].shape[1:] == (64, 96, 3)  # native size, not scaled by the decoder
    want = np.concatenate([ext.extract(ch)[name] for ch in chunks])
    np.testing.assert_allclose(got.data.astype(np.float32), want, atol=2e-2)
    assert _cos(got.data.astype(np.float32), want).min() >= 0.9999
