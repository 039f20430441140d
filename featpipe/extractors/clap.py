"""CLAP audio embeddings through transformers: ``clap:<Hugging Face repo id | local folder>``.

One embedding per segment of the common timeline, from a window of audio centred on the
segment (see :func:`segment_windows`): ``max(segment length, clap_window)`` seconds, at most the
model's 10 s, clipped to the recording. featpipe picks every window itself and feeds the model
inputs no longer than its maximum, so ClapFeatureExtractor never crops at random and never picks
a random "longer" clip for fusion: the same audio always gives the same embedding.

Weights: a Hugging Face repo id is looked up in the local Hugging Face cache and downloaded
only when the network allows (see :func:`resolve_folder`); a local folder must hold what
``ClapModel.save_pretrained`` and ``ClapFeatureExtractor.save_pretrained`` write. transformers
is the optional extra ``featpipe[clap]`` and is imported only when a CLAP spec is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import hub, register
from .base import AUDIO_RATE, Chunk, ExtractOptions, Extractor, ExtractorError, MediaNeeds, Option, OutputSpec

DEFAULT_WINDOW_S = 5.0
"""Default ``clap_window``: context around a 1 s segment without blurring its neighbours away."""

PADDINGS = ("repeatpad", "pad", "repeat")
_REQUIRED = ("config.json", "preprocessor_config.json")
_WRITER = "ClapModel.save_pretrained and ClapFeatureExtractor.save_pretrained"


def require_transformers() -> None:
    """One-line error when the optional dependency is missing (checked without importing it)."""
    hub.require_transformers("CLAP", "clap")


def resolve_folder(ref: str, spec: str) -> Path:
    """The local folder of a CLAP checkpoint: ``ref`` itself, or a repo id's snapshot in the HF cache
    (downloaded when the network allows; see :func:`featpipe.extractors.hub.resolve_folder`)."""
    return hub.resolve_folder(ref, spec, _REQUIRED, _WRITER, "clap")


weights_identity = hub.weights_identity


def load_model(folder: Path, device: str) -> Any:
    """``ClapModel`` from ``folder`` in eval mode on ``device`` (float32)."""
    from transformers import ClapModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return ClapModel.from_pretrained(str(folder)).eval().to(device)


def pooled(out: Any) -> Any:
    """The embedding of ``get_audio_features`` / ``get_text_features``: a tensor in transformers
    4.x, an output object whose ``pooler_output`` holds it in 5.x. Both are L2-normalised."""
    return out if hasattr(out, "shape") else out.pooler_output


def segment_windows(
    first: int, count: int, seg_len: float, duration: float, width: float, rate: int = AUDIO_RATE
) -> list[tuple[int, int]]:
    """Absolute ``[start, stop)`` sample ranges of the windows of segments ``first .. first+count-1``.

    Window k is ``width`` seconds centred on segment k, clipped to the recording ``[0, duration]``
    so no artificial silence enters it. Only absolute times matter, so a video cut into chunks gets
    the same windows as in one piece. A window with no recording under it (not expected: every
    kept segment starts inside the recording) keeps its full extent and sees zeros.
    """
    out = []
    n_total = round(duration * rate)
    for k in range(first, first + count):
        centre = (k + 0.5) * seg_len
        lo, hi = round((centre - width / 2) * rate), round((centre + width / 2) * rate)
        clo, chi = max(lo, 0), min(hi, n_total)
        out.append((clo, chi) if chi > clo else (lo, hi))
    return out


def pad_window(w: np.ndarray, length: int, padding: str) -> np.ndarray:
    """``w`` brought to ``length`` samples the way ClapFeatureExtractor pads short inputs.

    ``repeatpad``: whole repeats, then zeros; ``repeat``: repeats cut to length; ``pad``: zeros.
    """
    if len(w) > length:
        raise ValueError(f"clap: a {len(w)}-sample window exceeds the model's {length} (it would be cropped at random)")
    out = np.zeros(length, np.float64)
    if len(w) == 0:
        return out
    if padding == "repeat":
        return np.tile(w, length // len(w) + 1)[:length].astype(np.float64)
    reps = length // len(w) if padding == "repeatpad" else 1
    out[: reps * len(w)] = np.tile(w, reps)
    return out


def input_features(windows: list[np.ndarray], fe: Any, truncation: str, padding: str, device: str) -> Any:
    """``(n, 1, frames, mels)`` float32 log-mel inputs, equal to ClapFeatureExtractor's for inputs
    no longer than its maximum, computed in torch (float64, so on ``device`` and about twice as fast
    on a CPU; the numpy original dominated the run time of small models).

    Fusion checkpoints get the HTK mel bank and one channel: with no input "longer" than the
    maximum the model reads only channel 0 of the 4 identical ones ClapFeatureExtractor stacks.
    """
    import torch

    n = fe.nb_max_samples
    x = torch.from_numpy(np.stack([pad_window(w, n, padding) for w in windows])).to(device)
    window = torch.hann_window(fe.fft_window_size, periodic=True, dtype=torch.float64, device=device)
    spec = torch.stft(
        x,
        n_fft=fe.fft_window_size,
        hop_length=fe.hop_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()  # (n, bins, frames)
    bank = fe.mel_filters if truncation == "fusion" else fe.mel_filters_slaney  # (bins, mels)
    mel = torch.from_numpy(np.asarray(bank, np.float64)).to(device).T @ power
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))  # transformers' "dB" log-mel: floor 1e-10, reference 1
    return db.transpose(1, 2).unsqueeze(1).float()


@register
class ClapExtractor(Extractor):
    """CLAP audio embedding per segment (transformers' ClapModel)."""

    preload = ("torch", "transformers")  # what load() imports

    name = "clap"
    summary = "CLAP audio embedding per segment (transformers), window centred on the segment"
    spec_help = "clap:<Hugging Face repo id | local folder>"
    examples = ("clap:laion/larger_clap_music", "clap:laion/clap-htsat-unfused", "clap:/data/my_clap_folder")
    version = "1"
    option_specs = {
        "clap_window": Option(
            float, DEFAULT_WINDOW_S, "seconds of audio per embedding, centred on the segment (at most the model's 10 s)"
        ),
        "clap_padding": Option(
            str, "repeatpad", "how windows shorter than the model's input are filled", choices=PADDINGS
        ),
    }

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        self.ref = args.strip().rstrip("/")
        if not self.ref:
            raise ExtractorError(f"clap spec {self.spec!r} must be {self.spec_help}")
        require_transformers()
        self.window_req = self.opt("clap_window")
        if not 0 < self.window_req:
            raise ExtractorError(f"clap_window={self.window_req!r} must be positive")
        self.padding = self.opt("clap_padding")
        self._folder: Path | None = None
        self._config = None
        self._fe = None
        self._model = None

    # -- weights and configuration (cheap: no model build) ---------------------------------
    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = resolve_folder(self.ref, self.spec)
        return self._folder

    @property
    def feature_name(self) -> str:
        """``clap-<last part of the repo id or folder>``; the text side uses the same name."""
        return "clap-" + Path(self.ref).name

    def config(self) -> Any:
        if self._config is None:
            from transformers import ClapConfig

            self._config = ClapConfig.from_pretrained(str(self.folder))
        return self._config

    def feature_extractor(self) -> Any:
        if self._fe is None:
            from transformers import ClapFeatureExtractor

            self._fe = ClapFeatureExtractor.from_pretrained(str(self.folder))
            if self._fe.sampling_rate != AUDIO_RATE:
                raise ExtractorError(
                    f"{self.spec}: the model wants {self._fe.sampling_rate} Hz audio; "
                    f"featpipe decodes at {AUDIO_RATE} Hz"
                )
        return self._fe

    @property
    def max_window(self) -> float:
        """The model's longest input in seconds (10 s for the LAION checkpoints)."""
        return self.feature_extractor().nb_max_samples / AUDIO_RATE

    @property
    def window(self) -> float:
        return min(self.window_req, self.max_window)

    @property
    def fusion(self) -> bool:
        return bool(getattr(self.config().audio_config, "enable_fusion", False))

    @property
    def truncation(self) -> str:
        # Fusion checkpoints were trained on HTK-mel inputs (the "fusion" path; short inputs are
        # then 4 identical mels and only the global branch runs), the others on Slaney mels
        # ("rand_trunc"). Inputs are never longer than the maximum, so neither path crops.
        return "fusion" if self.fusion else "rand_trunc"

    def outputs(self) -> list[OutputSpec]:
        return [
            OutputSpec(
                self.feature_name,
                (int(self.config().projection_dim),),
                "audio",
                window=self.window,
                layout="CLAP audio embedding (projected, L2-normalised)",
                attrs={
                    "model": self.ref,
                    "window_s": self.window,
                    "padding": self.padding,
                    "truncation": self.truncation,
                    "fusion": self.fusion,
                    "window_rule": "max(segment, window_s) centred on the segment, at most the model's "
                    f"{self.max_window:g} s, clipped to the recording",
                },
            )
        ]

    def needs(self) -> MediaNeeds:
        # Half a window each side covers every segment length: a window never reaches further
        # than window/2 beyond its segment's centre, nor beyond the segment when it is longer.
        return MediaNeeds(audio=True, audio_context=self.window / 2)

    def check(self) -> None:
        self.feature_extractor()
        self.config()

    def weights_identity(self) -> str:
        return weights_identity(self.folder)

    # -- running ---------------------------------------------------------------------------
    def load(self, device: str) -> None:
        self.feature_extractor()
        self._model = load_model(self.folder, device)
        self._device = device

    def windows(self, chunk: Chunk) -> list[np.ndarray]:
        """The mono audio window of every segment of ``chunk`` (see :func:`segment_windows`)."""
        if chunk.audio_rate != AUDIO_RATE:
            raise ValueError(f"clap needs {AUDIO_RATE} Hz audio, got {chunk.audio_rate}")
        if chunk.audio_context + 1e-9 < self.window / 2:
            raise ValueError(f"clap needs audio_context >= {self.window / 2} s, the chunk has {chunk.audio_context}")
        mono = chunk.mono().astype(np.float32, copy=False)
        base = round((chunk.t0 - chunk.audio_context) * AUDIO_RATE)  # absolute sample of mono[0]
        width = min(max(self.window, chunk.seg_len), self.max_window)
        out = []
        for lo, hi in segment_windows(chunk.first, chunk.count, chunk.seg_len, chunk.duration, width):
            w = mono[lo - base : hi - base]
            if len(w) < hi - lo:  # the decoder may round a chunk a few samples short: silence
                w = np.pad(w, (0, hi - lo - len(w)))
            out.append(w)
        return out

    def embed(self, windows: list[np.ndarray]) -> np.ndarray:
        """Audio windows (each at most the model's maximum) -> ``(n, dim)`` float32 embeddings."""
        import torch

        if self._model is None:
            raise RuntimeError("clap: load() was not called")
        out = np.empty((len(windows), int(self.config().projection_dim)), np.float32)
        bs = max(1, self.options.batch_size)
        for i in range(0, len(windows), bs):
            part = windows[i : i + bs]
            feats = input_features(part, self.feature_extractor(), self.truncation, self.padding, self._device)
            # Every input fits the model, so none is "longer" and fusion models use their global branch
            # only (ClapFeatureExtractor would mark a random one as longer; featpipe never does).
            is_longer = torch.zeros((len(part), 1), dtype=torch.bool, device=self._device)
            with torch.inference_mode():
                res = self._model.get_audio_features(input_features=feats, is_longer=is_longer)
            out[i : i + len(part)] = pooled(res).float().cpu().numpy()
        return out

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        return {self.feature_name: self.embed(self.windows(chunk))}
