"""BEATs frame-level audio embeddings: ``beats:<checkpoint.pt>``.

The checkpoint is one of microsoft/unilm's released BEATs files (e.g. ``BEATs_iter3_plus_AS2M.pt``,
what Crab uses), given as a path or as a file name in the weights folder; it is read with
``torch.load(weights_only=True)`` and its ``cfg`` builds the network (:mod:`featpipe.models.beats`).

Audio: the chunk's mono (channel mean) at 16 kHz from the shared per-rate resampling, scaled by
2**15, BEATs's Kaldi fbank and normalisation, then the transformer over windows of ``--set
window=S`` seconds (default 10, BEATs's pre-training length) on the frame-level rule of
:mod:`.frames`. An output frame is one time patch (16 fbank frames, 0.16 s) with its 8 frequency
tokens averaged, centred at ``(1399.5 + 2560 i) / 16000`` s in its window (fbank frames 16 i ..
16 i + 15 read samples 2560 i .. 2560 i + 2799). ``--set layers=all|last|i,j`` (default
``last``): 0 is the encoder's input (after the convolutional position embedding and its
LayerNorm), i the output of layer i. Fine-tuned checkpoints store the same encoder states (their
AudioSet classifier is not applied).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..models import weights as fw
from . import register
from .base import ExtractOptions, ExtractorError, WeightsError
from .frames import FrameGeometry, FramewiseExtractor

GET = "get it from https://github.com/microsoft/unilm/tree/main/beats (e.g. BEATs_iter3+ (AS2M))"


@register
class BEATsExtractor(FramewiseExtractor):
    """BEATs (microsoft/unilm) encoder states per segment, from a published checkpoint."""

    name = "beats"
    summary = "BEATs audio transformer (unilm checkpoint .pt), frame-level states pooled per segment; --set layers=all"
    spec_help = "beats:<checkpoint.pt: a path, or a file name in the weights folder>"
    examples = ("beats:BEATs_iter3_plus_AS2M.pt", "beats:/models/BEATs_iter3_plus_AS2M.pt --set layers=all")
    version = "1"
    preload = ("torch",)  # what load() imports
    default_window, default_context, default_layers = 10.0, 2.0, "last"
    option_specs = FramewiseExtractor.frame_options(window=10.0, context=2.0, layers="last")

    def __init__(self, args: str, options: ExtractOptions) -> None:
        if not args:
            raise ExtractorError("bad spec 'beats': name the checkpoint, e.g. beats:BEATs_iter3_plus_AS2M.pt")
        self._path: Path | None = None
        self._cfg = None
        self._model = None
        self._device = "cpu"
        super().__init__(args, options)

    # ------------------------------------------------------------------ declarations
    @property
    def feature_name(self) -> str:
        stem = Path(self.args).name.removesuffix(".pt")
        return "beats-" + (re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "checkpoint")

    def _config(self):
        from ..models import beats as m

        if self._cfg is None:
            try:
                self._cfg = m.check_checkpoint(self._resolve())
            except m.CheckpointError as exc:
                raise WeightsError(f"{self.spec}: {exc}") from None
        return self._cfg

    def geometry(self) -> FrameGeometry:
        from ..models import beats as m

        p = self._config().input_patch_size
        stride = p * m.FRAME_SHIFT
        return FrameGeometry(
            m.SAMPLE_RATE,
            stride,
            ((p - 1) * m.FRAME_SHIFT + m.FRAME_LENGTH - 1) / 2,
            (p - 1) * m.FRAME_SHIFT + m.FRAME_LENGTH,
        )

    def n_states(self) -> int:
        return self._config().encoder_layers + 1

    def dim(self) -> int:
        return self._config().encoder_embed_dim

    def describe(self) -> dict:
        from ..models import beats as m

        return {
            "input": f"16 kHz mono x 2**15, Kaldi fbank {m.N_MELS} bins 25/10 ms, "
            f"(fbank - {m.FBANK_MEAN}) / (2 * {m.FBANK_STD})",
            "frame": "one time patch (16 fbank frames), mean of its 8 frequency tokens",
            "checkpoint": Path(self.args).name,
        }

    # ------------------------------------------------------------------ weights
    def _resolve(self) -> Path:
        if self._path is None:
            ref = Path(self.args).expanduser()
            if ref.is_file():
                self._path = ref
            elif ref.parent != Path(".") or self.args.startswith(("/", ".", "~")):
                raise WeightsError(f"{self.spec}: checkpoint {ref} not found; {GET}")
            else:
                try:
                    self._path = fw.find_weights(self.args, explicit=self.weights_path, spec=self.spec)
                except WeightsError as exc:
                    raise WeightsError(f"{exc}; {GET}") from None
        return self._path

    def check(self) -> None:
        self._config()
        _ = self.layers  # layers=... against the checkpoint's depth: a one-line ExtractorError

    def weights_identity(self) -> str:
        return "sha256:" + fw.sha256_file(self._resolve())

    # ------------------------------------------------------------------ compute
    def load(self, device: str) -> None:
        import torch

        from ..models import beats as m

        try:
            model = m.load_checkpoint(self._resolve())
        except m.CheckpointError as exc:
            raise WeightsError(f"{self.spec}: {exc}") from None
        self._cfg = model.cfg
        self._device = device
        self._model = model.to(torch.device(device))

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        from ..models import beats as m

        if self._model is None:
            raise RuntimeError("beats: load() was not called")
        with torch.inference_mode():
            wave = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self._device)
            states = self._model(m.preprocess(wave), layers=tuple(range(self.n_states())))
        return states.float().cpu().numpy()
