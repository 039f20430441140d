"""Where a CLIP model comes from, resolved on the client without building it.

A ``clip:`` spec names an open_clip model in one of open_clip's own ways:

- ``<model>/<pretrained tag>`` (``ViT-B-32-quickgelu/openai``): a built-in or registered
  config and one of its pretrained tags;
- ``<model>/<checkpoint path>`` or ``<model>/random`` (seeded random weights);
- ``hf-hub:<org>/<name>``: a Hugging Face repo holding ``open_clip_config.json`` and weights;
- ``local-dir:<folder>``: a folder in the same layout.

For each, :class:`ClipSource` gives the model config, the preprocessing configuration that
``open_clip.create_model_and_transforms`` would attach to the model (``model.visual.preprocess_cfg``:
defaults, overlaid by the tag's or the JSON's ``preprocess_cfg``; a bare checkpoint path gets
the defaults, exactly as in open_clip) and the weight file, raising :class:`WeightsError` with one
line when something is not on this machine. It reads open_clip's configs and tables as data
(:mod:`featpipe.models.clip_facts`), so the client never imports the ``open_clip`` package.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contracts import ExtractorError, WeightsError
from . import clip_facts
from .weights import online

HF_CONFIG = "open_clip_config.json"
HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's order
_CKPT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")
_registered: set[str] = set()


def register_configs() -> None:
    """Register the config folders/files in ``FEATPIPE_OPENCLIP_CONFIGS`` with open_clip (once each;
    where a model is built; the client reads them as data)."""
    import open_clip

    for item in filter(None, os.environ.get("FEATPIPE_OPENCLIP_CONFIGS", "").split(os.pathsep)):
        if item not in _registered:
            open_clip.add_model_config(item)
            _registered.add(item)


def _safe(text: str) -> str:
    """A piece of a feature name: never a path separator (names become HDF5 groups)."""
    return re.sub(r"[^A-Za-z0-9._@+-]+", "-", text).strip("-") or "x"


def size_2d(size: Any) -> tuple[int, int]:
    """open_clip's ``size`` (an int or (h, w)) as (h, w)."""
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[-1])
    return int(size), int(size)


def normalise_preprocess(cfg: dict) -> dict:
    """A preprocess cfg with tuples for lists and ``size`` as (h, w), so two can be compared."""
    out = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()}
    out["size"] = size_2d(out.get("size", 224))
    return out


def _cached_tag_file(cfg: dict) -> str | None:
    """The checkpoint of a pretrained tag if it is already on disk (HF cache or open_clip's URL cache)."""
    if cfg.get("file"):
        return cfg["file"]
    hub = cfg.get("hf_hub", "")
    if hub:
        parts = hub.strip("/").split("/")
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        hit = _hf_cached(repo, _hf_names(filename))
        if hit:
            return hit
    url = cfg.get("url", "")
    if url:
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return str(local)
    return None


def _hf_names(filename: str) -> list[str]:
    """The files open_clip's download_pretrained_from_hf tries for ``filename``, in its order."""
    if not filename or filename == HF_WEIGHTS[1]:
        return list(HF_WEIGHTS)
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _hf_cached(repo: str, names: list[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str):
            return hit
    return None


@dataclass
class ClipSource:
    """One ``clip:`` spec's model, resolved (config now; weights in :meth:`weights_file`)."""

    spec: str
    model: str  # as open_clip takes it: "ViT-B-32", "hf-hub:org/name", "local-dir:/path"
    pretrained: str  # tag, checkpoint path, "random", or "" with a schema
    model_cfg: dict
    json_preprocess: dict  # preprocess_cfg of an open_clip_config.json (schemas only)
    folder: Path | None = None  # the folder holding open_clip_config.json (schemas only)

    # -- parsing -----------------------------------------------------------------------------
    @classmethod
    def parse(cls, spec: str, args: str) -> "ClipSource":
        """``args`` is what follows ``clip:``; raises ExtractorError / WeightsError (one line)."""
        if args.startswith(("hf-hub:", "local-dir:")):
            schema, _, ident = args.partition(":")
            if not ident.strip("/"):
                raise ExtractorError(f"{spec}: give a repo or folder after {schema}:")
            folder = _schema_folder(spec, schema, ident)
            try:
                cfg = json.loads((folder / HF_CONFIG).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise WeightsError(f"{spec}: cannot read {folder / HF_CONFIG} ({exc})") from None
            if "model_cfg" not in cfg:
                raise ExtractorError(f"{spec}: {folder / HF_CONFIG} has no 'model_cfg'")
            return cls(spec, args, "", cfg["model_cfg"], cfg.get("preprocess_cfg", {}) or {}, folder)
        model, sep, pretrained = args.partition("/")
        if not model or not sep or not pretrained:
            raise ExtractorError(f"clip spec {spec!r} must be clip:<model>/<pretrained tag, checkpoint path or "
                                 "random>, clip:hf-hub:<org>/<name> or clip:local-dir:<folder>")
        cfg = clip_facts.model_config(model)
        if cfg is None:
            raise ExtractorError(f"{spec}: open_clip has no model {model!r} (see open_clip.list_models(), "
                                 "or register a config folder in FEATPIPE_OPENCLIP_CONFIGS)")
        return cls(spec, model, pretrained, cfg, {})

    @property
    def schema(self) -> str | None:
        return self.model.partition(":")[0] if self.folder is not None else None

    @property
    def is_path(self) -> bool:
        p = self.pretrained
        return self.schema is None and (p.startswith(("/", ".", "~")) or p.endswith(_CKPT_SUFFIXES))

    @property
    def is_random(self) -> bool:
        return self.schema is None and self.pretrained == "random"

    @property
    def feature_base(self) -> str:
        """The name every output starts with: ``clip-ViT-B-32-openai``, ``clip-hf-org-name``, ``clip-local-dir``."""
        if self.schema == "hf-hub":
            return "clip-hf-" + _safe(self.model.partition(":")[2])
        if self.schema == "local-dir":
            return "clip-local-" + _safe(self.folder.name)
        tag = Path(self.pretrained).stem if self.is_path else self.pretrained
        return f"clip-{_safe(self.model)}-{_safe(tag)}"

    @property
    def tag_cfg(self) -> dict:
        """open_clip's pretrained config of the tag ({} for paths, random and schemas)."""
        if self.schema is not None or self.is_path or self.is_random:
            return {}
        return clip_facts.pretrained().get_pretrained_cfg(self.model, self.pretrained) or {}

    # -- preprocessing -----------------------------------------------------------------------
    def preprocess_cfg(self) -> dict:
        """What ``create_model_and_transforms`` sets as ``model.visual.preprocess_cfg`` (size as (h, w))."""
        overlay = self.json_preprocess if self.schema is not None else self.tag_cfg
        cfg = clip_facts.merge_preprocess(clip_facts.preprocess_defaults(), overlay)
        cfg["size"] = self.model_cfg.get("vision_cfg", {}).get("image_size", 224)
        return normalise_preprocess(cfg)

    def quick_gelu_mismatch(self) -> str | None:
        """open_clip's warning when a tag was trained with another activation than the config has."""
        tag = self.tag_cfg
        if tag and bool(tag.get("quick_gelu", False)) != bool(self.model_cfg.get("quick_gelu", False)):
            hint = f"{self.model}-quickgelu" if tag.get("quick_gelu") else self.model.removesuffix("-quickgelu")
            return (f"{self.spec}: the {self.pretrained!r} weights were trained with "
                    f"{'QuickGELU' if tag.get('quick_gelu') else 'GELU'} but {self.model} uses the other; "
                    f"the embeddings will be off (use clip:{hint}/{self.pretrained})")
        return None

    # -- weights -----------------------------------------------------------------------------
    def weights_file(self) -> str | None:
        """The checkpoint to load (None for ``random``); one-line WeightsError when absent."""
        if self.is_random:
            return None
        if self.schema == "local-dir":
            hit = _find_checkpoint(self.folder)
            if hit is None:
                raise WeightsError(f"{self.spec}: {self.folder} has no weights (open_clip_model.safetensors, "
                                   "open_clip_pytorch_model.bin, or another *.safetensors/*.bin/*.pth)")
            return hit
        if self.schema == "hf-hub":
            return _hf_file(self.spec, self.model.partition(":")[2], list(HF_WEIGHTS))
        if self.is_path:
            path = Path(self.pretrained).expanduser()
            if not path.is_file():
                raise WeightsError(f"{self.spec}: checkpoint {path} does not exist")
            return str(path)
        table = clip_facts.pretrained()
        cfg = self.tag_cfg
        if not cfg:
            tags = ", ".join(table.list_pretrained_tags_by_model(self.model)) or "none"
            raise WeightsError(f"{self.spec}: open_clip has no pretrained tag {self.pretrained!r} for "
                               f"{self.model} (tags: {tags}; or give a checkpoint path, or 'random')")
        hit = _cached_tag_file(cfg)
        if hit:
            return hit
        if online():
            try:
                return table.download_pretrained(cfg)
            except Exception as exc:  # noqa: BLE001 - reported as one line below
                reason = f"download failed ({type(exc).__name__})"
        else:
            reason = "not in the local cache and there is no network"
        raise WeightsError(
            f"{self.spec}: weights {reason}; on a connected machine run `python -c \"import open_clip; "
            f"open_clip.create_model('{self.model}', pretrained='{self.pretrained}')\"` and copy "
            f"~/.cache/huggingface here, or pass a checkpoint: clip:{self.model}/PATH")


def _find_checkpoint(folder: Path) -> str | None:
    """The weights open_clip's ``local-dir:`` would pick: preferred names first, safetensors first."""
    preferred = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                 "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth",
                 "model.pth")
    for name in preferred:
        if (folder / name).is_file():
            return str(folder / name)
    found = sorted(p for ext in ("*.safetensors", "*.bin", "*.pth") for p in folder.glob(ext))
    found.sort(key=lambda p: p.suffix != ".safetensors")
    return str(found[0]) if found else None


def _hf_file(spec: str, repo: str, names: list[str]) -> str:
    hit = _hf_cached(repo, names)
    if hit:
        return hit
    if online():
        from huggingface_hub import hf_hub_download

        for name in names:
            try:
                return hf_hub_download(repo, name)
            except Exception:  # noqa: BLE001 - the next name, then one line below
                continue
        reason = "could not be downloaded"
    else:
        reason = "is not in the Hugging Face cache and there is no network"
    raise WeightsError(f"{spec}: {' or '.join(names)} of {repo} {reason}; on a connected machine run "
                       f"`python -c \"import open_clip; open_clip.create_model('hf-hub:{repo}')\"` and copy "
                       "~/.cache/huggingface here (or set HF_HUB_CACHE), or use clip:local-dir:<folder>")


def _schema_folder(spec: str, schema: str, ident: str) -> Path:
    """The folder holding open_clip_config.json: the local dir, or the HF cache snapshot of the repo."""
    if schema == "local-dir":
        folder = Path(ident).expanduser()
        if not (folder / HF_CONFIG).is_file():
            raise WeightsError(f"{spec}: {folder} has no {HF_CONFIG} (open_clip's local-dir layout: "
                               f"{HF_CONFIG} with model_cfg and preprocess_cfg, plus the weights)")
        return folder
    return Path(_hf_file(spec, ident.strip("/"), [HF_CONFIG])).parent
