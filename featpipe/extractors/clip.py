"""CLIP visual embeddings through open_clip: ``clip:<model>/<pretrained tag or checkpoint>``.

One embedding per segment from the frame at the segment centre; with ``--tokens`` also the patch
tokens (after ``ln_post``, projected into the embedding space with ``visual.proj``), which
spatial designs attend over. Weights are resolved on the client: a pretrained tag from the local
Hugging Face / open_clip cache (downloaded when the network allows), a local checkpoint path,
or ``random`` (seeded random weights, for tests and throughput runs). Extra model configs are
registered from the folders or JSON files in ``FEATPIPE_OPENCLIP_CONFIGS`` (``os.pathsep``
separated), in the client and in every worker.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..weights import online
from . import register
from .base import Chunk, Extractor, ExtractorError, MediaNeeds, OutputSpec, WeightsError

_registered_configs: set[str] = set()


def _register_configs() -> None:
    import open_clip

    for item in filter(None, os.environ.get("FEATPIPE_OPENCLIP_CONFIGS", "").split(os.pathsep)):
        if item not in _registered_configs:
            open_clip.add_model_config(item)
            _registered_configs.add(item)


def _cached_tag_file(cfg: dict) -> str | None:
    """The checkpoint of a pretrained tag if it is already on disk (HF cache or open_clip's URL cache)."""
    if cfg.get("file"):
        return cfg["file"]
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str):
                return hit
    url = cfg.get("url", "")
    if url:
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return str(local)
    return None


@register
class ClipExtractor(Extractor):
    name = "clip"
    summary = "CLIP image embedding per segment (open_clip); --tokens adds patch tokens"
    spec_help = "clip:<model>/<pretrained tag | checkpoint path | random>"
    examples = ("clip:ViT-B-32/laion2b_s34b_b79k", "clip:ViT-L-14-quickgelu/openai", "clip:ViT-B-32//data/ckpt.safetensors")

    def __init__(self, args, options) -> None:
        super().__init__(args, options)
        model, sep, pretrained = args.partition("/")
        if not model or not sep or not pretrained:
            raise ExtractorError(f"clip spec {self.spec!r} must be clip:<model>/<pretrained tag or checkpoint path>")
        self.model_name, self.pretrained = model, pretrained
        _register_configs()
        import open_clip

        self._cfg = open_clip.get_model_config(model)
        if self._cfg is None:
            raise ExtractorError(f"{self.spec}: open_clip has no model {model!r} (see open_clip.list_models(), "
                                 "or register a config folder in FEATPIPE_OPENCLIP_CONFIGS)")
        self._file: str | None = None
        self._model = None

    # -- declared --------------------------------------------------------------------------
    @property
    def _tag(self) -> str:
        return Path(self.pretrained).stem if self._is_path else self.pretrained

    @property
    def _is_path(self) -> bool:
        p = self.pretrained
        return p.startswith(("/", ".", "~")) or p.endswith((".pt", ".pth", ".bin", ".safetensors"))

    def _image_size(self) -> int:
        size = self._cfg["vision_cfg"].get("image_size", 224)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def _token_shape(self) -> tuple[int, int]:
        v = self._cfg["vision_cfg"]
        n = (self._image_size() // int(v.get("patch_size", 16))) ** 2
        return n, int(self._cfg["embed_dim"])

    def outputs(self) -> list[OutputSpec]:
        base = f"clip-{self.model_name}-{self._tag}"
        outs = [OutputSpec(base, (int(self._cfg["embed_dim"]),), "visual", window=None,
                           layout="CLIP image embedding (projected, not normalised)",
                           attrs={"model": self.model_name, "pretrained": self._tag, "image_size": self._image_size()})]
        if self.options.tokens:
            outs.append(OutputSpec(base + "-tokens", self._token_shape(), "visual",
                                   layout="patch tokens in row-major grid order, after ln_post, projected by visual.proj",
                                   attrs={"grid": int(self._token_shape()[0] ** 0.5)}))
        return outs

    def needs(self) -> MediaNeeds:
        return MediaNeeds(frame_positions=(0.5,), frame_short_side=self._image_size())

    # -- weights ---------------------------------------------------------------------------
    def check(self) -> None:
        self._file = self._resolve()

    def _resolve(self) -> str | None:
        if self.pretrained == "random":
            return None
        if self._is_path:
            path = Path(self.pretrained).expanduser()
            if not path.is_file():
                raise WeightsError(f"{self.spec}: checkpoint {path} does not exist")
            return str(path)
        import open_clip

        cfg = open_clip.get_pretrained_cfg(self.model_name, self.pretrained)
        if not cfg:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(self.model_name)) or "none"
            raise WeightsError(f"{self.spec}: open_clip has no pretrained tag {self.pretrained!r} for "
                               f"{self.model_name} (tags: {tags}; or give a checkpoint path, or 'random')")
        hit = _cached_tag_file(cfg)
        if hit:
            return hit
        if online():
            try:
                return open_clip.download_pretrained(cfg)
            except Exception as exc:  # noqa: BLE001 - reported as one line below
                reason = f"download failed ({type(exc).__name__})"
        else:
            reason = "not in the local cache and there is no network"
        raise WeightsError(
            f"{self.spec}: weights {reason}; on a connected machine run `python -c \"import open_clip; "
            f"open_clip.create_model('{self.model_name}', pretrained='{self.pretrained}')\"` and copy "
            f"~/.cache/huggingface here, or pass a checkpoint: clip:{self.model_name}/PATH")

    @property
    def model(self):
        """The loaded open_clip model (after :meth:`load`); the text encoder reuses it."""
        if self._model is None:
            raise RuntimeError(f"{self.spec}: load() has not been called")
        return self._model

    def weights_identity(self) -> str:
        if self.pretrained == "random":
            return "random-init"
        from ..weights import sha256_file

        if self._file is None:
            self._file = self._resolve()
        return "sha256:" + sha256_file(self._file)

    # -- running ---------------------------------------------------------------------------
    def load(self, device: str) -> None:
        import open_clip
        import torch

        if self._file is None and self.pretrained != "random":
            self._file = self._resolve()
        torch.manual_seed(0)  # "random" weights are the same in every worker
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # open_clip warns on random
        model = open_clip.create_model(self.model_name, pretrained=self._file, device=device)
        model.eval()
        self.half = device.startswith("cuda") and self.options.get("precision", "fp16") == "fp16"
        if self.half:
            model = model.half()
        model.visual.output_tokens = True
        self._model, self._device = model, device
        pre = model.visual.preprocess_cfg
        self._mean = torch.tensor(pre["mean"], device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(pre["std"], device=device).view(1, 3, 1, 1)

    def _preprocess(self, frames: np.ndarray):
        """uint8 (N, H, W, 3) -> normalised (N, 3, S, S): shortest side to S (bicubic), centre crop."""
        import torch
        import torchvision.transforms.v2.functional as TF

        x = torch.from_numpy(frames).to(self._device).permute(0, 3, 1, 2)
        size = self._image_size()
        x = TF.resize(x, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, [size, size]).float().div_(255.0)
        return (x - self._mean) / self._std

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        import torch

        frames = chunk.frames[0.5]
        pooled, tokens = [], []
        with torch.inference_mode():
            for i in range(0, len(frames), max(1, self.options.batch_size)):
                x = self._preprocess(frames[i:i + self.options.batch_size])
                if self.half:
                    x = x.half()
                p, t = self._model.visual(x)
                pooled.append(p.float().cpu().numpy())
                if self.options.tokens:
                    proj = self._model.visual.proj
                    t = t @ proj if proj is not None else t
                    tokens.append(t.float().cpu().numpy())
        outs = self.outputs()
        result = {outs[0].name: np.concatenate(pooled)}
        if self.options.tokens:
            result[outs[1].name] = np.concatenate(tokens)
        return result
