"""Audio Spectrogram Transformer embeddings per segment: ``ast:<Hugging Face repo id | local folder>``.

For each segment, ``--set window=S`` seconds (default 10.24, the AudioSet checkpoints' 1024 frames)
of mono audio at the checkpoint's rate (16 kHz), centred on the segment's centre, with zeros
outside the recording (as the field pads short clips), through the checkpoint's own
``ASTFeatureExtractor`` (128 Kaldi-style mel bins, its mean and std) and ``ASTModel``; the row is
the pooled output (the mean of the CLS and distillation tokens: 768-d for the AudioSet checkpoints).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import hub, register
from .base import Chunk, ExtractOptions, Extractor, ExtractorError, MediaNeeds, Option, OutputSpec
from .rates import audio_at, margin_s

_FRAME, _HOP = 400, 160  # the feature extractor's 25 ms / 10 ms frames at 16 kHz


@register
class AstExtractor(hub.HubCheckpoint, Extractor):
    """AST pooled embedding per segment (transformers' ASTFeatureExtractor + ASTModel)."""

    name = "ast"
    summary = "Audio Spectrogram Transformer pooled embedding per segment (transformers), 10.24 s centred window"
    spec_help = "ast:<Hugging Face repo id | local folder>"
    examples = ("ast:MIT/ast-finetuned-audioset-10-10-0.4593", "ast:/data/my_ast_folder")
    version = "1"
    hub_writer = "ASTModel.save_pretrained and ASTFeatureExtractor.save_pretrained"
    option_specs = {
        "window": Option(
            float,
            10.24,
            "seconds of audio per embedding, centred on the segment "
            "(zeros outside the recording; at most the model's input)",
        )
    }

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        self._init_ref(args, "ast")
        self.window_s = float(self.opt("window"))
        if self.window_s <= 0:
            raise ExtractorError(f"ast: window={self.window_s:g} must be positive")
        self._config: Any = None
        self._fe: Any = None
        self._model: Any = None
        self._device = "cpu"

    def config(self) -> Any:
        if self._config is None:
            from transformers import ASTConfig

            self._config = ASTConfig.from_pretrained(str(self.folder))
        return self._config

    def feature_extractor(self) -> Any:
        if self._fe is None:
            from transformers import ASTFeatureExtractor

            self._fe = ASTFeatureExtractor.from_pretrained(str(self.folder))
        return self._fe

    @property
    def rate(self) -> int:
        return int(self.feature_extractor().sampling_rate)

    @property
    def n_samples(self) -> int:
        return round(self.window_s * self.rate)

    def outputs(self) -> list[OutputSpec]:
        fe = self.feature_extractor()
        return [
            OutputSpec(
                self.feature_name,
                (int(self.config().hidden_size),),
                "audio",
                window=self.n_samples / self.rate,
                layout="AST pooled output (mean of the CLS and distillation tokens)",
                attrs={
                    "model": self.ref,
                    "window_s": self.n_samples / self.rate,
                    "rate": self.rate,
                    "window_rule": "centred on the segment centre, zeros outside the recording",
                    "num_mel_bins": int(fe.num_mel_bins),
                    "max_length": int(fe.max_length),
                },
            )
        ]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True, audio_context=round(self.window_s / 2 + margin_s(self.rate) + 0.01, 4))

    def check(self) -> None:
        fe, cfg = self.feature_extractor(), self.config()
        frames = (self.n_samples - _FRAME) // _HOP + 1
        if frames > fe.max_length:
            raise ExtractorError(
                f"{self.spec}: window={self.window_s:g} s is {frames} frames, more than the model's "
                f"{fe.max_length} ({(fe.max_length - 1) * _HOP + _FRAME} samples at {self.rate} Hz)"
            )
        if (fe.num_mel_bins, fe.max_length) != (cfg.num_mel_bins, cfg.max_length):
            raise ExtractorError(
                f"{self.spec}: preprocessor_config.json ({fe.num_mel_bins} mel bins, {fe.max_length} "
                f"frames) disagrees with config.json ({cfg.num_mel_bins}, {cfg.max_length})"
            )

    def load(self, device: str) -> None:
        from transformers import ASTModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.check()
        self._model = ASTModel.from_pretrained(str(self.folder)).eval().to(device)
        self._device = device

    def windows(self, chunk: Chunk) -> np.ndarray:
        """``(count, n)`` float32: each segment's window, centred on it, zeros outside the recording."""
        samples, n0 = audio_at(chunk, self.rate)
        n, total = self.n_samples, round(chunk.duration * self.rate)
        out = np.zeros((chunk.count, n), np.float32)
        for k in range(chunk.count):
            start = round((chunk.first + k + 0.5) * chunk.seg_len * self.rate) - n // 2
            lo, hi = max(start, 0, n0), min(start + n, total, n0 + len(samples))
            if hi > lo:
                out[k, lo - start : hi - start] = samples[lo - n0 : hi - n0]
        return out

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(count, n)`` windows -> ``(count, hidden)`` float32 pooled outputs."""
        import torch

        if self._model is None:
            raise RuntimeError("ast: load() was not called")
        fe = self.feature_extractor()
        out = np.empty((len(windows), int(self.config().hidden_size)), np.float32)
        bs = max(1, self.options.batch_size)
        for i in range(0, len(windows), bs):
            feats = fe(list(windows[i : i + bs]), sampling_rate=self.rate, return_tensors="pt")["input_values"]
            with torch.inference_mode():
                res = self._model(input_values=feats.to(self._device))
            out[i : i + bs] = res.pooler_output.float().cpu().numpy()
        return out

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        return {self.feature_name: self.embed(self.windows(chunk))}
