"""Shared pieces of the CLIP tests: tiny configs of every open_clip tower family, a textured clip,
an independent decode of the frames featpipe samples, and open_clip's own forward on them."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from featpipe.models.clip_config import register_configs  # FEATPIPE_OPENCLIP_CONFIGS, as the extractor does

TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
FAMILIES = {  # one tiny config per family open_clip builds
    "tiny-vit": {"embed_dim": 32, "text_cfg": TEXT,
                 "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16}},
    "tiny-rn": {"embed_dim": 32, "text_cfg": TEXT,
                "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None}},
    "tiny-siglip": {"embed_dim": 64, "custom_text": True, "text_cfg": {**TEXT, "width": 64},  # timm ViT, MAP pool
                    "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit", "timm_model_pretrained": False,
                                   "timm_pool": "map", "timm_proj": "none"}},
    "tiny-convnext": {"embed_dim": 32, "text_cfg": TEXT,  # timm CNN + linear projection head
                      "vision_cfg": {"image_size": 64, "timm_model_name": "test_convnext",
                                     "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear"}},
}


def write_config_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, cfg in FAMILIES.items():
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    return folder


def write_textured_clip(path: Path, seconds: int = 3, fps: int = 10, size: tuple[int, int] = (320, 180)) -> Path:
    """H.264 clip whose frames carry fine texture (interpolation filters change the pixels) and
    differ from second to second."""
    w, h = size
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:h, 0:w]
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv444p"
    vs.options = {"x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0", "preset": "ultrafast", "qp": "0"}
    for i in range(seconds * fps):
        s = i // fps
        img = np.stack([127 + 90 * np.sin(xx / (2.1 + c + s) + yy / 3.3 * (c - 1)) for c in range(3)], -1)
        img = (img + rng.normal(0, 25, img.shape)).clip(0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        for p in vs.encode(frame):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    out.close()
    return path


def centre_frames(path: Path, seg_len: float = 1.0) -> np.ndarray:
    """The frame on screen at each segment centre, decoded with PyAV directly (not featpipe.decode)."""
    with av.open(str(path)) as c:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    n = int(np.floor(frames[-1][0] + 1e-6)) + 1  # segments the clip covers
    picked = []
    for k in range(n):
        t = (k + 0.5) * seg_len
        picked.append([img for ts, img in frames if ts <= t + 1e-6][-1])
    return np.stack(picked)


def open_clip_reference(model_name: str, pretrained: str | None, frames: np.ndarray, seed: int = 0):
    """``create_model_and_transforms``' model and inference transform on PIL frames: (input, embeddings)."""
    import open_clip
    import torch
    from PIL import Image

    register_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    model.eval()
    x = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
    with torch.no_grad():
        emb = model.encode_image(x)
    return model, x, emb.numpy()


def save_weights(model_name: str, path: Path, seed: int = 1) -> Path:
    """A checkpoint of ``model_name`` with seeded random weights, as open_clip's state_dict layout."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    register_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(model_name)
        for p in model.visual.parameters():  # away from open_clip's init (zeroed bn3, tiny scales)
            p.data.add_(0.05 * torch.randn_like(p))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64).reshape(len(a), -1), b.astype(np.float64).reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
