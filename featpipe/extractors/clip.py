"""CLIP image embeddings through open_clip, for every model open_clip builds.

Specs: ``clip:<model>/<pretrained tag | checkpoint path | random>``, ``clip:hf-hub:<org>/<name>``,
``clip:local-dir:<folder>`` (see :mod:`featpipe.models.clip_config`). One embedding per segment
from the frame at the segment centre, decoded at its displayed size and preprocessed by
open_clip's own transform for that model and weights (``resize_mode``, ``interpolation``,
mean/std), so nothing is resized twice. ``--tokens`` adds the patch tokens in the embedding space
where the tower has them (ViTs; see :mod:`featpipe.models.clip_towers`), and is refused at
start-up with one line for towers that have none (ResNets, ConvNeXt). ``--set
token_layout=cls+patches`` stores PSTP-Net's layout instead: row 0 the image embedding, rows 1..
the patch tokens. See docs/clip.md for what is measured.

Extra model configs are registered from the folders or JSON files in ``FEATPIPE_OPENCLIP_CONFIGS``
(``os.pathsep`` separated), in the client and in every worker.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..models.clip_config import ClipSource, normalise_preprocess, size_2d
from ..models.clip_facts import tower_from_config
from . import register
from .base import Chunk, Extractor, ExtractorError, MediaNeeds, Option, OutputSpec

TOKEN_LAYOUTS = ("patches", "cls+patches")


@register
class ClipExtractor(Extractor):
    name = "clip"
    preload = ("torch", "open_clip")  # what load() imports
    summary = "CLIP image embedding per segment (any open_clip model); --tokens adds patch tokens (ViTs)"
    spec_help = "clip:<model>/<pretrained tag | checkpoint path | random>, clip:hf-hub:<org>/<name>, clip:local-dir:<dir>"
    examples = ("clip:ViT-B-32-quickgelu/openai", "clip:ViT-L-14-336-quickgelu/openai", "clip:ViT-B-16-SigLIP/webli",
                "clip:RN50-quickgelu/openai", "clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                "clip:ViT-B-32//data/ckpt.safetensors", "clip:local-dir:/data/my-clip")
    version = "2"  # 2: open_clip's transform per model/weights on native frames; every tower family
    option_specs = {
        "precision": Option(str, "fp16", "on CUDA: open_clip's fp16 (weights in fp16, norms in fp32, as OpenAI's "
                            "CLIP) or fp32; the CPU always computes in fp32", choices=("fp16", "fp32")),
        "token_layout": Option(str, "patches", "with --tokens: 'patches' stores (N, D) patch tokens as "
                               "<name>-tokens; 'cls+patches' stores (1+N, D) as <name>-cls-tokens, row 0 the image "
                               "embedding (PSTP-Net's clip_patch-level layout)", choices=TOKEN_LAYOUTS),
    }

    def __init__(self, args, options) -> None:
        super().__init__(args, options)
        self.source = ClipSource.parse(self.spec, args)
        self.model_name = self.source.model  # what open_clip.get_tokenizer takes (text.py)
        self.pretrained = self.source.pretrained
        self.preprocess_cfg = self.source.preprocess_cfg()
        self._tower = None
        self._file: str | None = None
        self._model = None

    # -- declared --------------------------------------------------------------------------
    @property
    def tower(self):
        """Family, embedding size and token shape of the image tower (a weightless build on ``meta``)."""
        if self._tower is None:
            from ..models.clip_towers import describe_tower

            self._tower = describe_tower(self.source.model_cfg)
        return self._tower

    def _declared_tower(self) -> tuple[str, int]:
        """(family, embedding width): from the config where it says them, so planning a run without
        --tokens builds nothing and never imports open_clip; each worker checks them in :meth:`load`."""
        if not self.options.tokens:
            known = tower_from_config(self.source.model_cfg)
            if known is not None:
                return known
        return self.tower.family, self.tower.embed_dim

    def outputs(self) -> list[OutputSpec]:
        base = self.source.feature_base
        pre = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.preprocess_cfg.items()}
        family, dim = self._declared_tower()
        attrs = {"model": self.source.model, "pretrained": self.source.pretrained, "family": family,
                 "preprocess": pre, "image_size": list(self.preprocess_cfg["size"])}
        outs = [OutputSpec(base, (dim,), "visual", window=None,
                           layout="CLIP image embedding (encode_image: projected, not normalised)", attrs=attrs)]
        if self.options.tokens:
            t = self.tower
            if t.token_shape is None:
                raise ExtractorError(f"{self.spec}: --tokens: this image tower ({t.family}) has no patch tokens: "
                                     f"{t.why_no_tokens}; drop --tokens for it (ViT towers have them)")
            n, d = t.token_shape
            grid = {"grid": list(t.grid)}
            if self.opt("token_layout") == "patches":
                outs.append(OutputSpec(base + "-tokens", (n, d), "visual", attrs=grid,
                                       layout="patch tokens in row-major grid order, in the embedding space "
                                              "(after the final norm, projected)"))
            else:
                outs.append(OutputSpec(base + "-cls-tokens", (1 + n, d), "visual", attrs=grid,
                                       layout="row 0 the image embedding (= the CLS token after ln_post, projected, "
                                              "for class-token ViTs), rows 1.. the patch tokens in row-major grid order"))
        return outs

    def needs(self) -> MediaNeeds:
        return MediaNeeds(frame_positions=(0.5,), frame_short_side=min(size_2d(self.preprocess_cfg["size"])),
                          native_frames=True)

    # -- weights ---------------------------------------------------------------------------
    def check(self) -> None:
        self.outputs()  # --tokens on a tower without tokens: one line, before any video
        mismatch = self.source.quick_gelu_mismatch()
        if mismatch:  # said once, here on the client, rather than by open_clip in every worker
            warnings.warn(mismatch, UserWarning, stacklevel=2)
        self._file = self.source.weights_file()

    @property
    def model(self):
        """The loaded open_clip model (after :meth:`load`); the text encoder reuses it."""
        if self._model is None:
            raise RuntimeError(f"{self.spec}: load() has not been called")
        return self._model

    def weights_identity(self) -> str:
        if self.source.is_random:
            return "random-init"
        from ..models.weights import sha256_file

        if self._file is None:
            self._file = self.source.weights_file()
        return "sha256:" + sha256_file(self._file)

    # -- running ---------------------------------------------------------------------------
    def load(self, device: str) -> None:
        import torch  # noqa: F401 - fail here, not mid-video, when torch is missing

        from ..models.clip_towers import VisualEncoder, build_model, frame_transform, input_dtype

        if self._file is None and not self.source.is_random:
            self._file = self.source.weights_file()
        src = self.source
        name = f"local-dir:{src.folder}" if src.folder is not None else src.model
        precision = "fp16" if device.startswith("cuda") and self.opt("precision") == "fp16" else "fp32"
        force = {k: v for k, v in self.preprocess_cfg.items() if k != "size"}
        model = build_model(name, self._file, device, precision, force_preprocess=force)
        got = normalise_preprocess(model.visual.preprocess_cfg)
        if got != self.preprocess_cfg:
            raise ExtractorError(f"{self.spec}: the built model's preprocessing {got} differs from the resolved "
                                 f"{self.preprocess_cfg}")
        built = (self.tower.family, self.tower.embed_dim)  # open_clip's own tower (on meta) vs the client's plan
        if built != self._declared_tower():
            raise ExtractorError(f"{self.spec}: open_clip builds a {built[0]} tower of width {built[1]}; the plan "
                                 f"said {self._declared_tower()} (a featpipe bug: please report it)")
        self._model, self._device = model, device
        self._encoder = VisualEncoder(model.visual, lambda x: model.encode_image(x, normalize=False))
        self._dtype = input_dtype(model.visual)
        self._transform = frame_transform(model.visual.preprocess_cfg)

    def preprocess(self, frames: np.ndarray):
        """uint8 (N, H, W, 3) decoded frames -> the model's (N, 3, h, w) float32 input (open_clip's transform)."""
        from ..models.clip_towers import preprocess_frames

        return preprocess_frames(frames, self._transform)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        import torch

        frames = chunk.frames[0.5]
        want = self.options.tokens
        pooled, tokens = [], []
        step = max(1, self.options.batch_size)
        with torch.inference_mode():
            for i in range(0, len(frames), step):
                x = self.preprocess(frames[i:i + step]).to(self._device, self._dtype)
                p, t = self._encoder(x, tokens=want)
                pooled.append(p.float().cpu().numpy())
                if want:
                    if self.opt("token_layout") == "cls+patches":
                        t = torch.cat([p[:, None, :].to(t.dtype), t], dim=1)
                    tokens.append(t.float().cpu().numpy())
        outs = self.outputs()
        result = {outs[0].name: np.concatenate(pooled)}
        if want:
            result[outs[1].name] = np.concatenate(tokens)
        return result
