"""OpenL3 audio embeddings (marl/openl3), in torch, from the official Keras weight files.

Spec: ``openl3:<repr>/<content>/<dim>``, e.g. ``openl3:mel256/music/512``; ``openl3`` alone
means ``mel256/music/512``. Options (``--set``, declared in ``option_specs``): ``frontend=v0.4``
(default) or ``v0.3``; ``native=1`` to also store the 10 frames/s embeddings.

OpenL3 embeds 1 s windows centred every 0.1 s (frame i is centred at i * 0.1 s). The
timeline output holds, per segment, the mean of the frames whose centres fall in it; the
native output holds the frames themselves. See docs/openl3.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..models import weights as fw
from . import register
from .base import Chunk, ExtractOptions, Extractor, ExtractorError, MediaNeeds, Option, OutputSpec, WeightsError

DEFAULT_ARGS = "mel256/music/512"
_VARIANT = re.compile(r"openl3_audio_(linear|mel128|mel256)_(music|env)")


@register
class OpenL3(Extractor):
    """OpenL3 audio embedding, 512 or 6144 dimensions, pooled onto the segment timeline."""

    preload = ("torch",)  # what load() imports

    name = "openl3"
    summary = "OpenL3 audio embeddings (torch port; official Keras weights), 10 frames/s pooled per segment"
    spec_help = "openl3:<linear|mel128|mel256>/<music|env>/<512|6144>"
    examples = ("openl3:mel256/music/512", "openl3:mel128/env/6144")
    version = "1"
    option_specs = {
        "frontend": Option(str, "v0.4", "spectrogram frontend: v0.4 (kapre 0.3 port) or v0.3 (the older openl3)",
                           choices=("v0.4", "v0.3")),  # models.openl3.FRONTENDS (imported lazily: torch)
        "native": Option(bool, False, "also store the 10 frames/s embeddings as <name>-native",
                         affects_output=False),  # adds a feature; the pooled one is unchanged
    }

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        from ..models import openl3 as m  # deferred: keeps `featpipe models` from importing torch

        parts = (args or DEFAULT_ARGS).split("/")
        if len(parts) != 3:
            raise ExtractorError(f"bad spec {self.spec!r}: expected {self.spec_help}")
        self.input_repr, self.content, dim = (p.strip().lower() for p in parts)
        if self.input_repr not in m.REPRS or self.content not in m.CONTENTS or dim not in {str(d) for d in m.DIMS}:
            raise ExtractorError(
                f"bad spec {self.spec!r}: repr one of {', '.join(m.REPRS)}; content one of"
                f" {', '.join(m.CONTENTS)}; dim one of {', '.join(map(str, m.DIMS))}"
            )
        self.dim = int(dim)
        self.frontend = self.opt("frontend")
        self.native = self.opt("native")
        self.filename = m.weight_filename(self.input_repr, self.content)
        self.url = m.weight_url(self.input_repr, self.content)
        self._path: Path | None = None
        self._model = None
        self._frontend = None
        self._device = "cpu"

    # ------------------------------------------------------------------ declarations
    @property
    def base_name(self) -> str:
        suffix = "" if self.frontend == "v0.4" else "-" + self.frontend.replace(".", "")
        return f"openl3-{self.input_repr}-{self.content}-{self.dim}{suffix}"

    def outputs(self) -> list[OutputSpec]:
        attrs = {"frontend": self.frontend, "frame_hop_s": 0.1, "frame_window_s": 1.0, "spec": self.spec}
        layout = f"OpenL3 {self.input_repr}/{self.content} embedding"
        if self.dim == 6144:
            layout += " (4 freq x 3 time x 512 channels, channels last)"
        outs = [
            OutputSpec(
                self.base_name, (self.dim,), "audio", layout=layout,
                attrs={**attrs, "pool": "mean of the 0.1 s frames centred in the segment"},
            )
        ]
        if self.native:
            outs.append(
                OutputSpec(f"{self.base_name}-native", (self.dim,), "audio", hop=0.1, start=0.0, window=1.0,
                           layout=layout, attrs=attrs)
            )
        return outs

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True, audio_context=0.5)

    # ------------------------------------------------------------------ weights
    def check(self) -> None:
        self._path = self._resolve()
        from ..models import openl3 as m

        try:  # shapes only: cheap, and catches a wrong or truncated file before any decoding
            m.check_layers(m.OpenL3Audio(self.input_repr, self.dim), m.read_keras_layers(self._path, False), self._path)
        except m.KerasWeightsError as exc:
            raise WeightsError(f"{self.spec}: {exc}") from None

    def weights_identity(self) -> str:
        return "sha256:" + fw.sha256_file(self._path or self._resolve())

    def _resolve(self) -> Path:
        path = fw.find_weights(self.filename, explicit=self.weights_path, url=self.url, spec=self.spec)
        found = _VARIANT.search(path.name)  # the official names say which model a file holds
        if found and (found[1], found[2]) != (self.input_repr, self.content):
            raise WeightsError(f"{self.spec}: {path} holds the {found[1]}/{found[2]} model; this spec needs "
                               f"{self.filename} ({self.input_repr}/{self.content}), whose layers have the same "
                               "shapes, so loading it would give wrong embeddings silently")
        return path

    # ------------------------------------------------------------------ compute
    def load(self, device: str) -> None:
        import torch

        from ..models import openl3 as m

        path = self._path or self._resolve()
        model = m.OpenL3Audio(self.input_repr, self.dim)
        try:
            m.load_keras_weights(model, path)
        except m.KerasWeightsError as exc:
            raise WeightsError(f"{self.spec}: {exc}") from None
        self._device = device
        # channels_last: about 25% faster convolutions on CPU (oneDNN), and what cuDNN prefers
        self._model = model.eval().to(torch.device(device), memory_format=torch.channels_last)
        self._frontend = m.Frontend(self.input_repr, self.frontend).to(torch.device(device))

    def frames(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the frames centred in ``[t0, t1)`` and their ``(n, 48000)`` audio windows."""
        from ..models.openl3 import HOP, SAMPLE_RATE, WINDOW

        if chunk.audio_rate != SAMPLE_RATE:
            raise ValueError(f"openl3 needs {SAMPLE_RATE} Hz audio, got {chunk.audio_rate}")
        audio = chunk.mono().astype(np.float32, copy=False)
        s0 = round(chunk.t0 * SAMPLE_RATE)  # absolute sample of t0
        ctx = round(chunk.audio_context * SAMPLE_RATE)
        first, stop = -(-s0 // HOP), -(-round(chunk.t1 * SAMPLE_RATE) // HOP)
        idx = np.arange(first, stop)
        starts = idx * HOP - WINDOW // 2 - s0 + ctx  # window start inside chunk.audio
        if len(idx) and starts[0] < 0:
            raise ValueError(f"openl3 needs audio_context >= 0.5 s, the chunk has {chunk.audio_context}")
        need = (int(starts[-1]) + WINDOW) if len(idx) else 0
        if need > audio.shape[0]:  # decoders may round the chunk a few samples short
            if need - audio.shape[0] > SAMPLE_RATE // 100:
                raise ValueError(f"chunk audio has {audio.shape[0]} samples, openl3 needs {need}")
            audio = np.pad(audio, (0, need - audio.shape[0]))
        if not len(idx):
            return idx, np.zeros((0, WINDOW), np.float32)
        return idx, np.lib.stride_tricks.sliding_window_view(audio, WINDOW)[starts]

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n, 48000)`` audio windows -> ``(n, dim)`` float32 embeddings, in batches."""
        import torch

        if self._model is None:
            raise RuntimeError("openl3: load() was not called")
        out = np.empty((len(windows), self.dim), np.float32)
        bs = max(1, self.options.batch_size)
        with torch.inference_mode():
            for i in range(0, len(windows), bs):
                x = torch.from_numpy(np.ascontiguousarray(windows[i : i + bs])).to(self._device)
                spec = self._frontend(x).contiguous(memory_format=torch.channels_last)
                out[i : i + bs] = self._model(spec).float().cpu().numpy()
        return out

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        from ..models.openl3 import HOP, SAMPLE_RATE

        idx, windows = self.frames(chunk)
        emb = self.embed(windows)
        # Segment k holds frames centred in [round(k*seg*sr), round((k+1)*seg*sr)) samples.
        bounds = np.array([round((chunk.first + k) * chunk.seg_len * SAMPLE_RATE) for k in range(chunk.count + 1)])
        seg_of = np.searchsorted(bounds, idx * HOP, side="right") - 1
        rows = np.zeros((chunk.count, self.dim), np.float32)
        for k in range(chunk.count):
            sel = emb[seg_of == k]
            if not len(sel):
                raise ValueError(f"openl3: segments of {chunk.seg_len} s are shorter than its 0.1 s frame hop")
            rows[k] = sel.mean(axis=0)
        out = {self.base_name: rows}
        if self.native:
            out[f"{self.base_name}-native"] = emb
        return out
