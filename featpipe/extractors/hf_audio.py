"""Any transformers audio encoder, layer by layer: ``hf-audio:<Hugging Face repo id | local folder>``.

Loads with ``AutoFeatureExtractor`` + ``AutoModel`` (never ``trust_remote_code``): the wav2vec2 family
(wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech, SEW: any config with ``conv_kernel`` and
``conv_stride``) and Whisper's encoder. Audio at the checkpoint's own rate through its own feature
extractor, one encoder window at a time (never padded, so no attention mask is needed; Whisper's
feature extractor pads every window to its 30 s as Whisper always does, and frames over that
padding are dropped). Frames are placed and pooled by the frame-level rule
(:mod:`featpipe.extractors.frames`):

- wav2vec2 family: frame ``i`` is the centre of its convolutional receptive field (400 samples,
  stride 320 for the usual 7-layer encoder: 50 frames/s at 16 kHz);
- Whisper: log-mel frame ``t`` is centred on sample ``160 t`` (centred STFT) and encoder frame ``j``
  on log-mel frame ``2 j`` (conv 3/1 then conv 3/2, both padded by 1): sample ``320 j``.

Hidden states: the model's ``hidden_states`` (embedding output, then each layer), the last one
replaced by ``last_hidden_state`` (transformers 5 returns pre-LN encoders' last state before the
final LayerNorm, 4.x after it; ``last_hidden_state`` is after it in both).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import hub, register
from .base import ExtractOptions, ExtractorError
from .frames import FrameGeometry, FramewiseExtractor, conv_geometry

_ALTERNATIVES = {
    "mert_model": "mert:",
    "music_hubert": "mert:",
    "audio-spectrogram-transformer": "ast:",
    "clap": "clap:",
}


@register
class HfAudioExtractor(hub.HubCheckpoint, FramewiseExtractor):
    """Hidden states of a transformers audio encoder per segment (wav2vec2 family, Whisper's encoder)."""

    name = "hf-audio"
    summary = (
        "hidden states of a transformers audio encoder per segment (wav2vec2, HuBERT, WavLM, data2vec-audio, "
        "Whisper's encoder), at its own rate"
    )
    spec_help = "hf-audio:<Hugging Face repo id | local folder>"
    examples = ("hf-audio:facebook/wav2vec2-base", "hf-audio:microsoft/wavlm-base-plus", "hf-audio:openai/whisper-base")
    version = "1"
    hub_writer = "the model's and its feature extractor's save_pretrained"
    option_specs = FramewiseExtractor.frame_options(window=10.0, context=2.0, layers="last")

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        self._init_ref(args, "hf-audio")
        self._config: Any = None
        self._fe: Any = None
        self._model: Any = None
        self._device = "cpu"

    @property
    def whisper(self) -> bool:
        return self.config().model_type == "whisper"

    def config(self) -> Any:
        if self._config is None:
            raw = hub.read_config(self.folder, self.spec)
            kind = raw.get("model_type")
            from transformers import AutoConfig
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING

            if kind in _ALTERNATIVES:
                raise ExtractorError(f"{self.spec}: a {kind} checkpoint; use {_ALTERNATIVES[kind]}{self.ref}")
            if kind not in CONFIG_MAPPING or raw.get("auto_map"):
                raise ExtractorError(
                    f"{self.spec}: model_type {kind!r} needs remote code (trust_remote_code), "
                    "which featpipe never runs; for MERT use mert:<folder>"
                )
            self._config = AutoConfig.from_pretrained(str(self.folder))
            if not self.whisper and not (hasattr(self._config, "conv_kernel") and hasattr(self._config, "conv_stride")):
                raise ExtractorError(
                    f"{self.spec}: model_type {kind!r} is not a wav2vec2-style encoder nor Whisper "
                    "(for AST use ast:, for CLAP clap:)"
                )
        return self._config

    def feature_extractor(self) -> Any:
        if self._fe is None:
            from transformers import AutoFeatureExtractor

            self._fe = AutoFeatureExtractor.from_pretrained(str(self.folder))
        return self._fe

    @property
    def max_window_s(self) -> float | None:
        return self.feature_extractor().n_samples / self.feature_extractor().sampling_rate if self.whisper else None

    def geometry(self) -> FrameGeometry:
        rate = int(self.feature_extractor().sampling_rate)
        if self.whisper:
            return FrameGeometry(rate, 2 * int(self.feature_extractor().hop_length), 0.0, 1)
        c = self.config()
        return conv_geometry(rate, c.conv_kernel, c.conv_stride)

    def n_states(self) -> int:
        c = self.config()
        return int(c.encoder_layers if self.whisper else c.num_hidden_layers) + 1

    def dim(self) -> int:
        c = self.config()
        return int(c.d_model if self.whisper else c.hidden_size)

    def describe(self) -> dict:
        fe = self.feature_extractor()
        return {
            "model": self.ref,
            "model_type": self.config().model_type,
            "feature_extractor": type(fe).__name__
            + (" (normalised per window)" if getattr(fe, "do_normalize", False) else ""),
        }

    def check(self) -> None:
        self.config()
        if self.max_window_s is not None and self.window_s > self.max_window_s + 1e-9:
            raise ExtractorError(f"{self.spec}: window={self.window_s:g} exceeds the model's {self.max_window_s:g} s")

    def load(self, device: str) -> None:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.check()
        model = AutoModel.from_pretrained(str(self.folder))
        if self.whisper:
            model = model.get_encoder()
        self._model = model.eval().to(device)
        self._device = device

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self._model is None:
            raise RuntimeError("hf-audio: load() was not called")
        fe = self.feature_extractor()
        inputs = fe(list(batch), sampling_rate=fe.sampling_rate, return_tensors="pt")
        key = "input_features" if self.whisper else "input_values"
        with torch.inference_mode():
            out = self._model(inputs[key].to(self._device), output_hidden_states=True)
        states = list(out.hidden_states)
        states[-1] = out.last_hidden_state
        return torch.stack(states, dim=1).float().cpu().numpy()
