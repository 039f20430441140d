"""ToMe-merged ViT tokens (TSPM's and QA-TIGER's "ToMe-14"): ``tome:<timm model>[/<tag | checkpoint | random>]``.

As TSPM's ``scripts/extract_ToMe/extract_tome14.py`` makes them: timm ``vit_large_patch16_384``
with the head an identity and no pooling, Token Merging with ``r = 25`` in the first 23 of its 24
blocks (577 -> 14 tokens; :mod:`featpipe.models.tome`), run on the frame at each segment centre
resized with PIL bicubic so its short side is ``int(256 / 224 * S)`` (438 for S = 384), centre
cropped to S x S and normalised with the checkpoint's mean/std (0.5). One row per segment:
``(N, D)`` tokens after the final norm, class token first.

Weights are resolved on the client: a checkpoint path in the spec, else ``--weights [tome=]PATH`` (a timm
``.safetensors``/``.pth``/``.bin`` state dict, or the original ``.npz``), else the pretrained tag
(default: timm's, ``augreg_in21k_ft_in1k`` for ViT-L/16-384) from the local Hugging Face cache
(``timm/<model>.<tag>``, downloaded when the network allows), or ``random`` (seeded). Extra model
variants (e.g. tiny ViTs for tests) come from JSON files ``{"model": <timm name>, "kwargs": {...}}``
named ``<variant>.json`` in the folders or files of ``FEATPIPE_TIMM_CONFIGS`` (``os.pathsep``
separated), read in the client and in every worker.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..models.weights import online
from . import register
from .base import Chunk, ExtractOptions, Extractor, ExtractorError, MediaNeeds, Option, OutputSpec, WeightsError

ENV_CONFIGS = "FEATPIPE_TIMM_CONFIGS"
_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's Hugging Face repos hold
_CHECKPOINT_EXT = (".safetensors", ".pth", ".pt", ".bin", ".npz")


def timm_variants() -> dict[str, dict[str, Any]]:
    """Model variants declared in ``FEATPIPE_TIMM_CONFIGS``: name -> {"model", "kwargs"}."""
    found: dict[str, dict[str, Any]] = {}
    for item in filter(None, os.environ.get(ENV_CONFIGS, "").split(os.pathsep)):
        path = Path(item).expanduser()
        for f in sorted(path.glob("*.json")) if path.is_dir() else [path]:
            try:
                cfg = json.loads(f.read_text())
            except (OSError, ValueError) as exc:
                raise ExtractorError(f"{ENV_CONFIGS}: cannot read {f} ({exc})") from None
            if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), str):
                raise ExtractorError(f"{ENV_CONFIGS}: {f} must hold {{\"model\": <timm name>, \"kwargs\": {{...}}}}")
            found[f.stem] = {"model": cfg["model"], "kwargs": dict(cfg.get("kwargs", {}))}
    return found


def tspm_resize(size: int) -> int:
    """The short side TSPM resizes to before its centre crop: ``int(256 / 224 * size)``."""
    return int((256 / 224) * size)


def preprocess_pil(frames: np.ndarray, size: int, mean, std) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, S, S) as torchvision's PIL path does it for TSPM.

    ``Resize(int(256/224*S), BICUBIC)`` on a PIL image (PIL's antialiased bicubic on uint8, long
    side ``int(short_target * long / short)``), ``CenterCrop(S)`` (offsets rounded), ``ToTensor``
    and ``Normalize(mean, std)``. A tensor-side bicubic differs from PIL's by up to a few grey
    levels, which is why PIL is used here.
    """
    from PIL import Image

    target = tspm_resize(size)
    out = np.empty((len(frames), 3, size, size), np.float32)
    for i, frame in enumerate(frames):
        h, w = frame.shape[:2]
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = target, int(target * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        img = Image.fromarray(frame)
        if (new_h, new_w) != (h, w):
            img = img.resize((new_w, new_h), Image.BICUBIC)
        top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
        crop = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        out[i] = crop.transpose(2, 0, 1)
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return (out - m) / s


@register
class ToMeExtractor(Extractor):
    name = "tome"
    preload = ("torch", "timm")  # what load() imports
    summary = "ToMe-merged timm ViT tokens per segment (TSPM/QA-TIGER ToMe-14: ViT-L/16-384, 577 -> 14 tokens)"
    spec_help = "tome:<timm model>[/<pretrained tag | checkpoint path | random>]"
    examples = ("tome:vit_large_patch16_384", "tome:vit_large_patch16_384//data/vit_l16_384.safetensors",
                "tome:vit_large_patch16_384/random")
    version = "1"
    option_specs = {
        "tome_r": Option(int, 25, "tokens merged per merging block (capped at half the unprotected tokens)"),
        "tome_layers": Option(int, 23, "how many leading blocks merge (TSPM: 23 of ViT-L's 24)"),
        "tome_prop_attn": Option(bool, True, "proportional attention (+log token size on the attention logits)"),
    }

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        model, _, weights = args.partition("/")
        model = model.strip()
        if not model:
            raise ExtractorError(f"tome spec {self.spec!r} must be tome:<timm model>[/<tag | checkpoint | random>]")
        variant = timm_variants().get(model)
        self.variant = model if variant else None
        arch, _, tag = (variant["model"] if variant else model).partition(".")
        self.arch, self.kwargs = arch, dict(variant["kwargs"]) if variant else {}
        self.weights = weights.strip() or self.weights_path or tag  # the spec's own first; --weights [tome=]PATH
        import timm

        if not timm.is_model(arch):
            raise ExtractorError(f"{self.spec}: timm has no model {arch!r} (see timm.list_models('vit_*'), or "
                                 f"declare a variant in {ENV_CONFIGS})")
        self._file: str | None = None
        self._model = None
        self._meta: dict[str, Any] | None = None

    # -- declared --------------------------------------------------------------------------
    @property
    def _is_path(self) -> bool:
        w = self.weights
        return w.startswith(("/", ".", "~")) or w.endswith(_CHECKPOINT_EXT)

    @property
    def _tag(self) -> str:
        if self.weights == "random":
            return "random"
        if self._is_path:
            return Path(self.weights).stem
        return self.weights or self._pretrained_cfg().get("tag") or "default"

    def _pretrained_cfg(self) -> dict[str, Any]:
        import timm
        from timm.models import get_pretrained_cfg

        tag = "" if self._is_path or self.weights in ("", "random") else self.weights
        try:
            cfg = get_pretrained_cfg(f"{self.arch}.{tag}" if tag else self.arch)
        except RuntimeError:
            cfg = None
        if cfg is None and tag:
            tags = ", ".join(t.partition(".")[2] for t in timm.list_pretrained(self.arch + ".*")) or "none"
            raise WeightsError(f"{self.spec}: timm has no pretrained tag {tag!r} for {self.arch} (tags: {tags}; "
                               "or give a checkpoint path, or 'random')")
        return cfg.to_dict() if cfg is not None else {}

    def _shape_facts(self) -> dict[str, Any]:
        """Image size, token count and width, from the model built on the meta device (cheap)."""
        if self._meta is None:
            import timm
            import torch

            cfg = self._pretrained_cfg()
            with torch.device("meta"):
                vit = timm.create_model(self.arch, pretrained=False, num_classes=0, **self.kwargs)
            from ..models.tome import check_supported, merge_schedule, token_counts

            try:
                check_supported(vit)
                schedule = merge_schedule(self.opt("tome_r"), self.opt("tome_layers"), len(vit.blocks))
            except ValueError as exc:
                raise ExtractorError(f"{self.spec}: {exc}") from None
            protected = int(vit.cls_token is not None)
            tokens = vit.patch_embed.num_patches + protected
            self._meta = {"image_size": int(vit.patch_embed.img_size[0]), "depth": len(vit.blocks),
                          "dim": int(vit.embed_dim), "schedule": schedule, "tokens_in": tokens,
                          "tokens": token_counts(tokens, schedule, protected)[-1],
                          "mean": tuple(cfg.get("mean", (0.5,) * 3)), "std": tuple(cfg.get("std", (0.5,) * 3))}
        return self._meta

    def outputs(self) -> list[OutputSpec]:
        f = self._shape_facts()
        r, layers = self.opt("tome_r"), self.opt("tome_layers")
        return [OutputSpec(
            f"tome{f['tokens']}-{self.variant or self.arch}-{self._tag}", (f["tokens"], f["dim"]), "visual",
            layout=f"ToMe-merged tokens (class token first) after the final norm, r={r} in the first {layers} blocks",
            attrs={"model": self.variant or self.arch, "weights": self._tag, "image_size": f["image_size"],
                   "resize": tspm_resize(f["image_size"]), "tokens_in": f["tokens_in"], "r": r, "layers": layers,
                   "prop_attn": self.opt("tome_prop_attn")})]

    def needs(self) -> MediaNeeds:
        # The resize must see the original frame (PIL bicubic from the decoded size), as TSPM's does.
        return MediaNeeds(frame_positions=(0.5,), frame_short_side=tspm_resize(self._shape_facts()["image_size"]),
                          native_frames=True)

    # -- weights ---------------------------------------------------------------------------
    def check(self) -> None:
        self._shape_facts()
        self._file = self._resolve()

    def _resolve(self) -> str | None:
        if self.weights == "random":
            return None
        if self._is_path:
            path = Path(self.weights).expanduser()
            if not path.is_file():
                raise WeightsError(f"{self.spec}: checkpoint {path} does not exist (give a timm .safetensors/.pth "
                                   "state dict with --weights PATH or in the spec)")
            return str(path)
        if self.variant:
            raise WeightsError(f"{self.spec}: variant {self.variant!r} has no pretrained weights; give a checkpoint "
                               f"path (--weights PATH or tome:{self.variant}/PATH) or 'random'")
        cfg = self._pretrained_cfg()
        repo = cfg.get("hf_hub_id") or ""
        from huggingface_hub import constants, try_to_load_from_cache

        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else list(_FILES)
        for name in names if repo else []:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str):
                return hit
        if repo and online():
            from huggingface_hub import hf_hub_download

            try:
                return hf_hub_download(repo, names[0])
            except Exception as exc:  # noqa: BLE001 - reported as one line below
                reason = f"download failed ({type(exc).__name__})"
        else:
            reason = "not in the local Hugging Face cache and there is no network" if repo else "not on the Hugging Face hub"
        where = f"{repo} ({names[0]})" if repo else f"{self.arch}.{self._tag}"
        raise WeightsError(
            f"{self.spec}: weights {where} are {reason} (cache: {constants.HF_HUB_CACHE}); on a connected machine run "
            f"`huggingface-cli download {repo or self.arch}` and copy ~/.cache/huggingface here, or pass a local "
            f".safetensors/.pth: --weights PATH or tome:{self.arch}/PATH")

    def weights_identity(self) -> str:
        if self.weights == "random":
            return "random-init"
        from ..models.weights import sha256_file

        if self._file is None:
            self._file = self._resolve()
        return "sha256:" + sha256_file(self._file)

    # -- running ---------------------------------------------------------------------------
    def build_model(self):
        """The timm ViT with the head removed (``num_classes=0``), weights loaded by timm's own loader."""
        import timm
        import torch

        if self._file is None and self.weights != "random":
            self._file = self._resolve()
        torch.manual_seed(0)  # "random" weights are the same in every worker
        kwargs = dict(self.kwargs, num_classes=0)
        if self._file is None:
            return timm.create_model(self.arch, pretrained=False, **kwargs)
        tag = "" if self._is_path else self.weights
        # timm's loader: key remapping, position-embedding resampling, classifier dropped for num_classes=0.
        overlay = {"file": self._file, "custom_load": self._file.endswith(".npz")}
        try:
            return timm.create_model(f"{self.arch}.{tag}" if tag else self.arch, pretrained=True,
                                     pretrained_cfg_overlay=overlay, **kwargs)
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WeightsError(f"{self.spec}: cannot load {self._file} into {self.arch} ({first[:200]})") from None

    def load(self, device: str) -> None:
        logging.getLogger("timm").setLevel(logging.WARNING)
        model = self.build_model().to(device).eval()
        model.global_pool = None  # as TSPM: tokens out, no pooling (tome_tokens never pools anyway)
        self._model, self._device = model, device

    @property
    def model(self):
        if self._model is None:
            raise RuntimeError(f"{self.spec}: load() has not been called")
        return self._model

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        import torch

        from ..models.tome import tome_tokens

        f = self._shape_facts()
        frames = chunk.frames[0.5]
        out = []
        step = max(1, self.options.batch_size)
        with torch.inference_mode():
            for i in range(0, len(frames), step):
                x = torch.from_numpy(preprocess_pil(frames[i:i + step], f["image_size"], f["mean"], f["std"]))
                t = tome_tokens(self.model, x.to(self._device), f["schedule"], self.opt("tome_prop_attn"))
                out.append(t.float().cpu().numpy())
        tokens = np.concatenate(out) if out else np.zeros((0, f["tokens"], f["dim"]), np.float32)
        return {self.outputs()[0].name: tokens}


TOME14_MODEL = "vit_large_patch16_384"  # TSPM's extract_tome14.py


@register
class ToMe14(ToMeExtractor):
    """``tome14[:<tag | checkpoint | random>]``: shorthand for ``tome:vit_large_patch16_384[/...]``.

    Building it gives a plain :class:`ToMeExtractor` for the full spec, so the spec, identity and
    output name (``tome14-vit_large_patch16_384-<tag>``) are those of the spec written out: a cache
    made with either form accepts the other. In ``--weights NAME=PATH`` / ``--name NAME=...``
    select it as ``tome`` (or by its full spec).
    """

    name = "tome14"
    summary = f"shorthand for tome:{TOME14_MODEL} (TSPM/QA-TIGER ToMe-14: (14, 1024) per segment)"
    spec_help = "tome14[:<pretrained tag | checkpoint path | random>]"
    examples = ("tome14", "tome14:/data/vit_l16_384.safetensors", "tome14:random")

    def __new__(cls, args: str, options: ExtractOptions) -> ToMeExtractor:  # type: ignore[misc]
        return ToMeExtractor(TOME14_MODEL + (f"/{args}" if args else ""), options)
