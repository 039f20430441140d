"""Hugging Face checkpoints as published: a local folder, or a repo id in the local Hugging Face cache.

Shared by the transformers-based extractors (``clap``, ``ast``, ``mert``, ``hf-audio``). A repo id
missing from the cache is downloaded (configs, one weight format, never code) when the network
allows; otherwise :class:`WeightsError` says in one line how to get it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from .base import ExtractorError, WeightsError
from ..models.weights import online as _online

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_DOWNLOAD_PATTERNS = (["*.json", "*.txt", "model.safetensors*"], ["*.json", "*.txt", "pytorch_model.bin*"])


def require_transformers(what: str, extra: str) -> None:
    """One-line error when transformers is missing (checked without importing it)."""
    if importlib.util.find_spec("transformers") is None:
        raise ExtractorError(f"{what} needs transformers, which is not installed: pip install 'featpipe[{extra}]'")


def is_folder_ref(ref: str) -> bool:
    return ref.startswith(("/", ".", "~")) or Path(ref).expanduser().is_dir()


def has_weights(folder: Path) -> bool:
    return any((folder / n).is_file() for n in WEIGHT_FILES + SHARD_INDEXES)


def check_folder(folder: Path, spec: str, required: tuple[str, ...], writer: str) -> None:
    """``folder`` holds ``required`` files and a weight file, else one line saying what writes them."""
    missing = [n for n in required if not (folder / n).is_file()]
    if not has_weights(folder):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise WeightsError(f"{spec}: {folder} lacks {', '.join(missing)} (write it with {writer})")


def resolve_folder(ref: str, spec: str, required: tuple[str, ...], writer: str, prefix: str) -> Path:
    """The local folder of checkpoint ``ref`` (a folder, or a repo id's snapshot in the HF cache).

    ``required``: files the folder must hold beside the weights; ``writer``: what writes them (for
    the message); ``prefix``: the spec's name, for the "give a local folder" hint.
    """
    if is_folder_ref(ref):
        folder = Path(ref).expanduser()
        if not folder.is_dir():
            raise WeightsError(f"{spec}: folder {folder} does not exist")
        check_folder(folder, spec, required, writer)
        return folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(ref, local_files_only=True))
        if has_weights(folder) and (folder / "config.json").is_file():
            check_folder(folder, spec, required, writer)
            return folder
        reason = "is only partly in the local Hugging Face cache"
    except LocalEntryNotFoundError:
        reason = "is not in the local Hugging Face cache"
    except ValueError as exc:  # a malformed repo id
        raise ExtractorError(f"{spec}: {ref!r} is neither a folder nor a Hugging Face repo id ({exc})") from None
    if _online():
        try:
            for patterns in _DOWNLOAD_PATTERNS:  # safetensors first; the .bin only when there is none
                folder = Path(snapshot_download(ref, allow_patterns=patterns))
                if has_weights(folder):
                    break
            check_folder(folder, spec, required, writer)
            return folder
        except WeightsError:
            raise
        except Exception as exc:  # noqa: BLE001 - network and hub errors, reported in one line
            reason = f"could not be downloaded ({type(exc).__name__})"
    else:
        reason += " and there is no network"
    raise WeightsError(
        f"{spec}: {ref} {reason}; on a connected machine run `huggingface-cli download {ref}` "
        f"and copy ~/.cache/huggingface here, or give a local folder: {prefix}:/path/to/folder"
    )


def weights_identity(folder: Path) -> str:
    """``sha256:<hex>`` of the weight file (of the shard digests, for a sharded checkpoint)."""
    from ..models.weights import sha256_file

    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return "sha256:" + sha256_file(folder / name)
    for index in SHARD_INDEXES:
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            joined = "".join(sha256_file(folder / s) for s in shards)
            return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()
    raise WeightsError(f"{folder} has no weight file")


def read_config(folder: Path, spec: str) -> dict:
    """``config.json`` as a dict (one-line error when unreadable)."""
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{spec}: {folder / 'config.json'} is not readable JSON ({exc})") from None


class HubCheckpoint:
    """Mixin for extractors whose spec argument is a Hugging Face repo id or folder (``NAME:<ref>``).

    The class sets ``name``, ``spec_help``, ``hub_writer`` (what writes the folder, for messages) and
    optionally ``hub_required`` (files beside the weights); :meth:`_init_ref` parses the argument.
    """

    hub_required: tuple[str, ...] = ("config.json", "preprocessor_config.json")
    hub_writer: str = "save_pretrained"

    def _init_ref(self, args: str, needs: str) -> None:
        """Parse ``args`` into ``self.ref``; one-line errors for an empty spec or a missing transformers."""
        self.ref = args.strip().rstrip("/")
        if not self.ref:
            raise ExtractorError(f"{self.name} spec {self.spec!r} must be {self.spec_help}")
        require_transformers(needs, "audio")
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        """The checkpoint's local folder (resolved once; see :func:`resolve_folder`)."""
        if self._folder is None:
            self._folder = resolve_folder(self.ref, self.spec, self.hub_required, self.hub_writer, self.name)
        return self._folder

    @property
    def feature_name(self) -> str:
        """``<name>-<last part of the repo id or folder>``."""
        return f"{self.name}-{Path(self.ref).name}"

    def weights_identity(self) -> str:
        return weights_identity(self.folder)
