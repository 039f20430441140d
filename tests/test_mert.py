"""mert: featpipe's MusicHubert port against MERT's own computation, on tiny random hub folders.

References, both independent of featpipe's port:
- in this environment, transformers' HubertModel (MERT-v1's network is HuBERT's: MusicHubert
  subclasses it and, without its CQT branch and deepnorm, changes nothing else) on the same input;
- MERT's own stack as MARBLE runs it: transformers 4.47.1 (the last version MERT's code supports,
  where MusicHubertModel = its HubertModel + MusicHubertConfig with conv_pos_batch_norm off, and
  deepnorm's scaled residuals in the layers) in a side environment this test installs with
  ``pip install --target`` (skipped, saying why, when the package registry cannot be reached),
  run through `featpipe extract` end to end: PyAV read, soxr to 24 kHz, Wav2Vec2FeatureExtractor
  per window, every hidden state. Tolerance: cosine >= 0.9999 per segment over all 13 states.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import side_envs
from audio_refs import cosines, extract, music, pool, read_mono, windows, write_wave
from featpipe import open_cache
from featpipe.extractors import ExtractOptions, WeightsError, build
from featpipe.models import mert as m

TINY = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=[32] * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
SIDE_VERSION = "4.47.1"


def tiny(folder: Path, preset: str = "95M", seed: int = 0, **over) -> Path:
    return m.write_random(folder, m.hub_config(preset, **{**TINY, **over}), seed=seed)


def hf_reference(folder: Path, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """transformers' HubertModel (this environment's version) on the folder's weights."""
    from transformers import HubertConfig, HubertModel

    cfg = json.loads((folder / "config.json").read_text())
    hc = HubertConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "auto_map", "model_type")})
    hc.conv_pos_batch_norm = False
    ref = HubertModel.from_pretrained(folder, config=hc).eval()
    with torch.no_grad():
        out = ref(x, output_hidden_states=True)
    return list(out.hidden_states), out.last_hidden_state


@pytest.mark.parametrize("preset", ["95M", "330M"])
def test_port_equals_transformers_hubert(tmp_path, preset):
    folder = tiny(tmp_path / "m", preset)
    model = m.load(folder, json.loads((folder / "config.json").read_text()))
    x = torch.randn(2, 24_000)
    with torch.no_grad():
        ours = model(x)
    states, last = hf_reference(folder, x)
    assert len(ours) == len(states) == TINY["num_hidden_layers"] + 1
    for a, b in zip(ours[:-1], states[:-1]):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    # the last state is the encoder's output (after the final LayerNorm of pre-LN encoders), as
    # MERT's code returns it; transformers 5 hands out the pre-LN last state before that norm
    torch.testing.assert_close(ours[-1], last, atol=2e-5, rtol=1e-4)


def test_safetensors_and_parametrized_names_load_alike(tmp_path):
    folder = tiny(tmp_path / "bin")
    cfg = json.loads((folder / "config.json").read_text())
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    renamed = {
        ("mert_model." + k)
        .replace("conv.weight_g", "conv.parametrizations.weight.original0")
        .replace("conv.weight_v", "conv.parametrizations.weight.original1"): v
        for k, v in state.items()
    }
    other = tmp_path / "st"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import save_file

    save_file(renamed, str(other / "model.safetensors"))
    x = torch.randn(1, 12_000)
    with torch.no_grad():
        a, b = m.load(folder, cfg)(x), m.load(other, cfg)(x)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


def test_bad_folders_give_one_line(tmp_path):
    folder = tiny(tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "feature_extractor_cqt": True}))
    with pytest.raises(WeightsError, match="CQT") as err:
        build(f"mert:{folder}").check()
    assert "\n" not in str(err.value)
    (folder / "config.json").write_text(json.dumps({**cfg, "hidden_size": 48}))
    with pytest.raises(WeightsError, match="shape"):
        build(f"mert:{folder}").check()
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="not a readable"):
        build(f"mert:{folder}").check()
    with pytest.raises(WeightsError, match="lacks"):
        build(f"mert:{tmp_path}").check()


def test_outputs_default_to_every_hidden_state(tmp_path):
    folder = tiny(tmp_path / "MERT-tiny")
    [out] = build(f"mert:{folder}").outputs()
    assert out.name == "mert-MERT-tiny" and out.shape == (4, 32) and out.attrs["layers"] == [0, 1, 2, 3]
    assert out.attrs["rate"] == 24_000 and out.attrs["frame_rate"] == 75.0
    assert build(f"mert:{folder}", ExtractOptions(extra=(("mert.layers", "last"),))).outputs()[0].shape == (32,)


# ------------------------------------------------------------------ MERT's own stack, in a side environment

_SIDE_SCRIPT = r"""
import json, sys
import numpy as np, torch, transformers
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor
from transformers.models.hubert import modeling_hubert as mh

assert transformers.__version__ == sys.argv[5], transformers.__version__
folder, audio, plan, out = sys.argv[1:5]
cfg = json.load(open(folder + "/config.json"))
hc = HubertConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "auto_map", "model_type")})
hc.conv_pos_batch_norm = False  # as MusicHubertConfig sets it
if cfg.get("deepnorm"):  # MusicHubert's post-LN layer with residuals scaled by (2 L) ** 0.25
    alpha = (2.0 * cfg["num_hidden_layers"]) ** 0.25
    def forward(self, h, attention_mask=None, output_attentions=False):
        r = h
        h, w, _ = self.attention(h, attention_mask=attention_mask, output_attentions=output_attentions)
        h = self.layer_norm(r * alpha + self.dropout(h))
        h = self.final_layer_norm(h * alpha + self.feed_forward(h))
        return (h, w) if output_attentions else (h,)
    mh.HubertEncoderLayer.forward = forward
model = HubertModel.from_pretrained(folder, config=hc).eval()
fe = Wav2Vec2FeatureExtractor.from_pretrained(folder)
x = np.load(audio)
res = {}
for i, (s, n) in enumerate(json.load(open(plan))):
    v = fe(x[s:s + n], sampling_rate=fe.sampling_rate, return_tensors="pt").input_values
    with torch.no_grad():
        res["w%d" % i] = torch.stack(model(v, output_hidden_states=True).hidden_states, 1)[0].numpy()
np.savez(out, **res)
"""


@pytest.fixture(scope="session")
def side_env() -> Path:
    """transformers 4.47.1 installed with ``pip install --target`` (tests/side_envs.py; reused by later runs)."""
    return side_envs.transformers(SIDE_VERSION, "MERT reference")


def side_states(
    side: Path, folder: Path, mono24: np.ndarray, plan: list[tuple[int, int]], tmp: Path
) -> list[np.ndarray]:
    """(L+1, T, D) hidden states per window from MERT's stack under transformers 4.47.1."""
    (tmp / "ref.py").write_text(_SIDE_SCRIPT)
    np.save(tmp / "x.npy", mono24.astype(np.float32))
    (tmp / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "PYTHONPATH": str(side)}
    res = subprocess.run(
        [
            sys.executable,
            str(tmp / "ref.py"),
            str(folder),
            str(tmp / "x.npy"),
            str(tmp / "plan.json"),
            str(tmp / "out.npz"),
            SIDE_VERSION,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    got = np.load(tmp / "out.npz")
    return [got[f"w{i}"] for i in range(len(plan))]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mertclips")
    write_wave(folder / "long.mkv", music(7.0, seed=3))
    write_wave(folder / "short.mkv", music(2.5, seed=4))
    return folder


@pytest.mark.parametrize("variant", ["95M", "330M", "deepnorm"])
def test_featpipe_extract_equals_merts_own_code(side_env, clips, tmp_path, variant):
    preset = "330M" if variant == "330M" else "95M"
    over = {"deepnorm": True, "attention_relax": 32.0} if variant == "deepnorm" else {}
    folder = tiny(tmp_path / "tiny-mert", preset, **over)
    cache = tmp_path / "c.h5"
    extract(clips, cache, [f"mert:{folder}"], fps=4, sets={"window": "3.2", "context": "0.4"})
    for vid, seconds in (("long", 7.0), ("short", 2.5)):
        mono = read_mono(clips / f"{vid}.mkv", 24_000)
        plan = windows(len(mono), 320, 76_800, 9_600)  # 3.2 s and 0.4 s: whole strides
        states = side_states(side_env, folder, mono, [(s, n) for s, n, _, _ in plan], tmp_path)
        centres, frames = [], []
        for (s, n, lo, hi), st in zip(plan, states):
            c = s + 320 * np.arange(st.shape[1]) + 199.5  # 400-sample receptive field every 320 samples
            keep = (c >= lo) & (c < hi)
            centres.append(c[keep] / 24_000)
            frames.append(st[:, keep].transpose(1, 0, 2))  # (T, L+1, D)
        want = pool(np.concatenate(centres), np.concatenate(frames), int(seconds * 4), 0.25)
        with open_cache(cache) as c:
            got = c.get(vid, "mert-tiny-mert").data
        assert got.shape == want.shape == (int(seconds * 4), 4, 32)
        cos = cosines(got, want)
        assert cos[1:-1].min() >= 0.9999, (vid, cos.round(6))
        per_layer = [cosines(got[:, i], want[:, i])[1:-1].min() for i in range(4)]
        assert min(per_layer) >= 0.9995, (vid, per_layer)
