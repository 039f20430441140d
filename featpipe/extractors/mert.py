"""MERT-v1 hidden states per segment: ``mert:<Hugging Face repo id | local folder>``.

The folder as m-a-p publishes it (``config.json`` with ``model_type: mert_model``,
``preprocessor_config.json``, ``pytorch_model.bin`` read with ``weights_only=True``, or
``model.safetensors``), run by featpipe's own MusicHubert port (:mod:`featpipe.models.mert`):
MERT's hub code needs ``trust_remote_code`` and fails on transformers >= 4.48, so featpipe never runs it.

Audio: mono at the checkpoint's rate (24 kHz), each encoder window normalised by the checkpoint's
``Wav2Vec2FeatureExtractor`` (zero mean, unit variance over the window's samples, all of them inside
the recording: windows are never padded). Frames (75 per second) are placed and pooled by the
frame-level rule (:mod:`featpipe.extractors.frames`); ``--set layers=all`` (the default) stores the
13 (95M) or 25 (330M) hidden states per segment, as MARBLE probes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import hub, register
from .base import ExtractOptions, WeightsError
from .frames import FrameGeometry, FramewiseExtractor, conv_geometry


@register
class MertExtractor(hub.HubCheckpoint, FramewiseExtractor):
    """MERT-v1 hidden states per segment (featpipe's port of MusicHubert, no remote code)."""

    name = "mert"
    summary = "MERT-v1 hidden states per segment (featpipe's MusicHubert port, no remote code; 24 kHz, all layers)"
    spec_help = "mert:<Hugging Face repo id | local folder>"
    examples = ("mert:m-a-p/MERT-v1-95M", "mert:m-a-p/MERT-v1-330M", "mert:/data/MERT-v1-95M")
    version = "1"
    hub_writer = "featpipe.models.mert.write_random, or download the hub folder"
    option_specs = FramewiseExtractor.frame_options(window=10.0, context=2.0, layers="all")

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        self._init_ref(args, "mert (its Wav2Vec2FeatureExtractor)")
        self._cfg: dict | None = None
        self._raw: dict = {}
        self._fe: Any = None
        self._model: Any = None
        self._device = "cpu"

    def config(self) -> dict:
        if self._cfg is None:
            from ..models import mert as m

            raw = hub.read_config(self.folder, self.spec)
            try:
                self._cfg = m.read_config(raw)
            except m.MertConfigError as exc:
                raise WeightsError(f"{self.spec}: {self.folder / 'config.json'}: {exc}") from None
            self._raw = raw
        return self._cfg

    def raw_config(self) -> dict:
        """config.json as published (the port reads it again, filling MusicHubert's defaults)."""
        self.config()
        return self._raw

    def feature_extractor(self) -> Any:
        if self._fe is None:
            from transformers import Wav2Vec2FeatureExtractor

            self._fe = Wav2Vec2FeatureExtractor.from_pretrained(str(self.folder))
            rate = int(self.config()["sample_rate"])
            if int(self._fe.sampling_rate) != rate:
                raise WeightsError(
                    f"{self.spec}: preprocessor_config.json says {self._fe.sampling_rate} Hz, config.json {rate} Hz"
                )
        return self._fe

    def geometry(self) -> FrameGeometry:
        c = self.config()
        return conv_geometry(int(c["sample_rate"]), c["conv_kernel"], c["conv_stride"])

    def n_states(self) -> int:
        return int(self.config()["num_hidden_layers"]) + 1

    def dim(self) -> int:
        return int(self.config()["hidden_size"])

    def describe(self) -> dict:
        return {
            "model": self.ref,
            "normalise": "Wav2Vec2FeatureExtractor per window (recording samples only)"
            if self.feature_extractor().do_normalize
            else "none (do_normalize false)",
            "network": "featpipe.models.mert (MusicHubert port)",
        }

    def check(self) -> None:
        from ..models import mert as m
        from ..models.state_dict import StateDictError

        self.feature_extractor()
        try:
            m.check(self.folder, self.raw_config())
        except StateDictError as exc:
            raise WeightsError(f"{self.spec}: {exc}") from None

    def load(self, device: str) -> None:
        from ..models import mert as m
        from ..models.state_dict import StateDictError

        self.feature_extractor()
        try:
            model = m.load(self.folder, self.raw_config())
        except StateDictError as exc:
            raise WeightsError(f"{self.spec}: {exc}") from None
        self._device = device
        self._model = model.to(device)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self._model is None:
            raise RuntimeError("mert: load() was not called")
        fe = self.feature_extractor()
        values = fe(list(batch), sampling_rate=fe.sampling_rate, return_tensors="np")["input_values"]
        with torch.inference_mode():
            states = self._model(torch.from_numpy(np.asarray(values, np.float32)).to(self._device))
        return torch.stack(states, dim=1).float().cpu().numpy()
