"""VGGish audio embeddings as MUSIC-AVQA extracts them: one 0.96 s example per segment.

Spec ``vggish`` (no arguments). Options: ``--set pca=1`` stores AudioSet's released form
instead (PCA with whitening and 8-bit quantisation, levels 0..255); ``--set resample=fir`` uses
an anti-aliased 48 -> 16 kHz filter instead of the default ``moviepy``, which reproduces the
16 kHz WAVs MUSIC-AVQA's scripts feed VGGish for any source rate and layout (moviepy 1.0.3 reads
ffmpeg's 44.1 kHz 16-bit stereo -- the decoder makes that copy with FFmpeg's own resampler and
downmix -- and picks the nearest 44.1 kHz frame, with no anti-alias filter, through a buffer
that slips one frame per refill; see :func:`featpipe.models.vggish.moviepy_16k`). Weights: the torch
port's state-dict files (harritaylor/torchvggish v0.1), see :mod:`featpipe.models.vggish`.

Segment k's example starts 0.5 s before the segment centre (at fps 1: at second k, as
MUSIC-AVQA's ``feat_script/extract_audio_feat`` frames each second) and spans 0.975 s of mono
(channel mean) 16 kHz audio, derived from featpipe's single 48 kHz decode on an absolute sample
grid, so chunking never changes a row. Output names: ``vggish``, ``vggish-fir``, with ``-pca``
appended for the PCA form. See docs/features.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..models import weights as fw
from . import register
from .base import AUDIO_RATE, Chunk, ExtractOptions, Extractor, ExtractorError, MediaNeeds, Option, OutputSpec, WeightsError

_MARGIN_S = 0.08  # audio beyond the examples: the FIR's half length (3 ms), and moviepy's buffer
# slips (one 44.1 kHz frame late per 2.37 s: 0.07 s after two hours)


@register
class VGGishExtractor(Extractor):
    """VGGish (AudioSet) 128-d embedding per segment, MUSIC-AVQA's audio protocol."""

    name = "vggish"
    preload = ("torch",)  # what load() imports
    summary = ("VGGish 128-d audio embedding per segment (MUSIC-AVQA protocol; torchvggish weights);"
               " --set pca=1, --set resample=fir")
    spec_help = "vggish"
    examples = ("vggish",)
    version = "2"  # 2: the 44.1 kHz step by FFmpeg's resampler from the source (was: interpolated from 48 kHz)
    option_specs = {
        "pca": Option(bool, False, "apply AudioSet's released PCA + 8-bit quantisation (levels 0..255)"),
        "resample": Option(str, "moviepy", "16 kHz audio as MUSIC-AVQA's WAVs hold it (moviepy: nearest "
                           "44.1 kHz sample, no anti-aliasing, 16-bit) or anti-aliased (fir)",
                           choices=("moviepy", "fir")),
    }

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        if args:
            raise ExtractorError(f"bad spec {self.spec!r}: vggish takes no arguments (use --set pca=1)")
        self.pca = bool(self.opt("pca"))
        self.resample = str(self.opt("resample"))
        self._paths: tuple[Path, Path | None] | None = None
        self._model = None
        self._pca = None
        self._device = "cpu"

    # ------------------------------------------------------------------ declarations
    def outputs(self) -> list[OutputSpec]:
        from ..models import vggish as m

        resampler = {"moviepy": "moviepy 1.0.3: ffmpeg's 44.1 kHz 16-bit stereo (FFmpeg's resampler and "
                                "downmix, from the source rate), nearest frame through its slipping buffer, clip 0.99",
                     "fir": "48 kHz -> 16 kHz Kaiser FIR (289 taps, 90 dB)"}[self.resample]
        attrs = {"sample_rate": m.SAMPLE_RATE, "example_s": m.EXAMPLE_SAMPLES / m.SAMPLE_RATE,
                 "example_start": "segment centre - 0.5 s", "mono": "mean of channels", "resampler": resampler}
        name = "vggish" + ("-fir" if self.resample == "fir" else "") + ("-pca" if self.pca else "")
        layout = ("VGGish embedding, AudioSet PCA + whitening, quantised to levels 0..255" if self.pca
                  else "VGGish embedding (TF-slim vggish/embedding, after its ReLU)")
        return [OutputSpec(name, (m.EMBEDDING,), "audio", window=m.EXAMPLE_SAMPLES / m.SAMPLE_RATE,
                           layout=layout, attrs=attrs)]

    def needs(self) -> MediaNeeds:
        from ..models import vggish as m

        # The segment length is not known here: ask for what the shortest segments need (the
        # 1 s window around a segment centre reaches 0.5 s past it), plus the filter margin.
        copies = (m.MOVIEPY_COPY,) if self.resample == "moviepy" else ()
        return MediaNeeds(audio=True, audio_context=0.5 + _MARGIN_S, audio_copies=copies)

    # ------------------------------------------------------------------ weights
    def check(self) -> None:
        from ..models import vggish as m
        from ..models.state_dict import StateDictError

        model_path, pca_path = self._resolve()
        try:
            m.check_model_file(model_path)
            if pca_path is not None:
                m.load_pca(pca_path)
        except StateDictError as exc:
            raise WeightsError(f"{self.spec}: {exc}") from None
        self._paths = (model_path, pca_path)

    def _resolve(self) -> tuple[Path, Path | None]:
        from ..models import vggish as m

        explicit = self.weights_path
        hub = (fw.torch_hub_checkpoints(),)
        model = fw.find_weights(m.MODEL_FILE, explicit=explicit, url=m.RELEASE + m.MODEL_FILE, spec=self.spec, also=hub)
        if not self.pca:
            return model, None
        if explicit and Path(explicit).expanduser().is_file():  # --weights names the model file: PCA beside it
            explicit = str(Path(explicit).expanduser().parent)
        pca = fw.find_weights(m.PCA_FILE, explicit=explicit, url=m.RELEASE + m.PCA_FILE, spec=self.spec, also=hub)
        return model, pca

    def weights_identity(self) -> str:
        model, pca = self._paths or self._resolve()
        ident = "sha256:" + fw.sha256_file(model)
        return ident + ("+sha256:" + fw.sha256_file(pca) if pca is not None else "")

    # ------------------------------------------------------------------ compute
    def load(self, device: str) -> None:
        import torch

        from ..models import vggish as m
        from ..models.state_dict import StateDictError

        model_path, pca_path = self._paths or self._resolve()
        try:
            model = m.load_model(model_path)
            pca = m.load_pca(pca_path) if pca_path is not None else None
        except StateDictError as exc:
            raise WeightsError(f"{self.spec}: {exc}") from None
        self._device = device
        self._model = model.to(torch.device(device))
        self._pca = tuple(t.to(torch.device(device)) for t in pca) if pca is not None else None

    def example_audio(self, chunk: Chunk) -> np.ndarray:
        """``(count, 15600)`` float32 16 kHz mono audio, one example per segment of the chunk."""
        from ..models import vggish as m

        if chunk.audio_rate != AUDIO_RATE:
            raise ValueError(f"vggish needs {AUDIO_RATE} Hz audio, got {chunk.audio_rate}")
        need = max(0.0, 0.5 - chunk.seg_len / 2) + _MARGIN_S
        if chunk.audio_context + 1e-9 < need:
            raise ValueError(f"vggish needs audio_context >= {need:.3f} s for {chunk.seg_len} s segments, "
                             f"the chunk has {chunk.audio_context}")
        a0 = round((chunk.t0 - chunk.audio_context) * AUDIO_RATE)  # absolute 48 kHz index of audio[:, 0]
        centres = (chunk.first + np.arange(chunk.count) + 0.5) * chunk.seg_len
        starts = [round((c - 0.5) * m.SAMPLE_RATE) for c in centres]  # absolute 16 kHz sample indices
        out = np.zeros((chunk.count, m.EXAMPLE_SAMPLES), np.float32)
        if not starts:
            return out
        if self.resample == "moviepy":
            copy = chunk.audio_copies.get(m.MOVIEPY_COPY)
            if copy is None:
                raise RuntimeError("featpipe bug: vggish asked the decoder for moviepy's 44.1 kHz copy and got none")
            b0 = round((chunk.t0 - chunk.audio_context) * m.MOVIEPY_RATE)  # absolute 44.1 kHz index of copy[:, 0]
            for k, s in enumerate(starts):
                out[k] = m.moviepy_16k(copy, b0, s, m.EXAMPLE_SAMPLES, chunk.duration)
            return out
        audio = chunk.audio
        need = 3 * (starts[-1] + m.EXAMPLE_SAMPLES) + 3 * m.RESAMPLE_MARGIN - a0
        if need > audio.shape[1]:  # the decoder may round a chunk a few samples short
            audio = np.pad(audio, ((0, 0), (0, need - audio.shape[1])))
        n0 = -(-a0 // 3)  # first 16 kHz sample on the absolute grid (16 kHz sample n = 48 kHz sample 3n)
        y = m.resample_to_16k(audio.mean(axis=0)[3 * n0 - a0:])
        for k, s in enumerate(starts):
            out[k] = y[s - n0:s - n0 + m.EXAMPLE_SAMPLES]
        return out

    def embed(self, examples: np.ndarray) -> np.ndarray:
        """``(n, 96, 64)`` log-mel examples -> ``(n, 128)`` float32 (PCA levels when ``pca``)."""
        import torch

        from ..models import vggish as m

        if self._model is None:
            raise RuntimeError("vggish: load() was not called")
        out = np.empty((len(examples), m.EMBEDDING), np.float32)
        bs = max(1, self.options.batch_size)
        with torch.inference_mode():
            for i in range(0, len(examples), bs):
                emb = self._model(torch.from_numpy(np.ascontiguousarray(examples[i:i + bs])).to(self._device))
                if self._pca is not None:
                    emb = m.postprocess(emb, *self._pca)
                out[i:i + bs] = emb.float().cpu().numpy()
        return out

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        from ..models import vggish as m

        return {self.outputs()[0].name: self.embed(m.log_mel_examples(self.example_audio(chunk)))}
