"""``rhythm``: weight-free beat, tempo, onset-rate and percussive cues per segment, with librosa.

Everything is local, so a video cut into chunks gives the rows of the whole video in one chunk:

* one frame grid anchored at t = 0 of the recording (frame j centred on sample ``j * HOP``),
  as in ``priors``; the onset envelope of a frame depends on that frame and the one before;
* the local tempo of a segment is librosa's tempo estimate (autocorrelation tempogram, log-normal
  prior) on the mean tempogram of the segment's frames, each a window of ``TEMPO_WIN_S`` around
  its frame;
* the beats of a segment come from librosa's dynamic-programming tracker (Ellis 2007) run on a
  window of the envelope reaching ``BEAT_CTX_S`` past each edge of that segment only, at the
  segment's local tempo; the beats it places inside the segment are kept. One window per
  segment (all tracked in one batched call) makes the result independent of the chunking.

The decoder's audio context (:data:`CONTEXT_S`) covers the previous segment (for the tempo
change) plus those windows. Layout: :data:`LAYOUT`; docs/features.md explains every dimension.
"""

from __future__ import annotations

import json

import numpy as np

from ..contracts import BEATS_OUTPUT
from . import dsp, register
from .base import AUDIO_RATE, Chunk, ExtractOptions, Extractor, ExtractorError, MediaNeeds, Option, OutputSpec
from .priors import layout_string

try:
    import librosa
except ModuleNotFoundError:  # the extractor says so in one line when it is used
    librosa = None

N_FFT = 2048  # 42.7 ms at 48 kHz
HOP = 480  # 10 ms: 100 frames per second
N_MELS = 128
LAG = 1  # frames: the envelope is the rise from the previous frame (2 or 3 blur the beats)
MAX_SIZE = 3  # mel bands: SuperFlux-style max filter on the reference frame, so vibrato is no onset
FMIN, FMAX = 30.0, 16_000.0
FLOOR_DB = -80.0  # band levels (re. a full-scale sine's peak bin) below this count as silence
TEMPO_WIN_S = 6.0  # autocorrelation window of the tempogram
BEAT_CTX_S = 3.0  # how far past a segment's edges its beat tracker looks
MAX_SEG_S = 2.0  # longest segment the context below covers (the tempo change looks one back)
MAX_TEMPO = 320.0  # BPM; librosa's default upper bound
HPSS_KERNEL = (17, 9)  # (frames, mel bands): Fitzgerald's harmonic and percussive median filters
PAN_SPLIT = (0.5, 0.8)  # left share of a bin's power: 0 weight at 0.5 (centre), 1 from 0.8 (6 dB)
# Onset peak picking on the envelope, in frames (librosa.util.peak_pick, no 'wait': stays local).
PICK = dict(pre_max=3, post_max=4, pre_avg=10, post_avg=11, wait=0)
_TEMPO_FRAMES = round(TEMPO_WIN_S * AUDIO_RATE / HOP)
_BEAT_FRAMES = round(BEAT_CTX_S * AUDIO_RATE / HOP)
TG_STRIDE = 5  # the tempogram is taken at every 5th frame (50 ms) and averaged per segment
MIN_SEG_S = TG_STRIDE * HOP / AUDIO_RATE  # each segment must own one of those frames (fps <= 20)
CONTEXT_S = MAX_SEG_S + max(TEMPO_WIN_S / 2, BEAT_CTX_S) + 0.1  # >= 5.05 s: see _frame_range
BEATS = BEATS_OUTPUT
"""The optional output (``--set beat_times=1``) of every beat time, as offsets into its segment."""
MAX_BEATS = int(np.ceil(MAX_SEG_S * MAX_TEMPO / 60.0)) + 1  # 12: the most beats a segment can hold


def _layout() -> list[tuple[str, int, int]]:
    parts = ("beat_count", "beat_strength", "first_beat_s", "tempo_bpm", "tempo_change_bpm",
             "tempo_strength", "onset_rate", "onset_strength", "percussive_share",
             "onset_rate_left", "onset_rate_right", "tempo_left_bpm", "tempo_right_bpm",
             "tempo_strength_left", "tempo_strength_right", "stereo")
    return [(name, i, i + 1) for i, name in enumerate(parts)]


LAYOUT: list[tuple[str, int, int]] = _layout()
"""``(name, start, stop)`` slices of the last axis of ``rhythm``."""
DIM = LAYOUT[-1][2]
SLICES: dict[str, slice] = {name: slice(a, b) for name, a, b in LAYOUT}
COL: dict[str, int] = {name: a for name, a, _ in LAYOUT}


def _need_librosa() -> None:
    if librosa is None:
        raise ExtractorError("rhythm needs librosa: pip install 'featpipe[rhythm]' (or pip install librosa)")


@register
class Rhythm(Extractor):
    """Beat, tempo and onset cues from the waveform alone: no weights, no randomness."""

    preload = ("librosa",)  # what load() imports

    name = "rhythm"
    summary = (f"weight-free rhythm per segment ({DIM}-d: beats, local tempo and its change, "
               "onset rate, percussive share, per-side onset rate and tempo; librosa)")
    spec_help = "rhythm"
    examples = ("rhythm",)
    version = "1"
    option_specs = {
        "start_bpm": Option(float, 120.0, "centre of the log-normal tempo prior (BPM)"),
        "tightness": Option(float, 100.0, "beat tracker: how closely beats follow the tempo"),
        "onset_delta": Option(float, 0.75, "onset peak picking: dB of flux above the local mean"),
        # the beats are found either way; this only adds a feature, so it stays out of rhythm's identity
        "beat_times": Option(bool, False, f"also store {BEATS}: each segment's beat times (seconds after "
                                          f"its start, up to {MAX_BEATS}, -1 after the last)",
                             affects_output=False),
    }

    def __init__(self, args: str, options: ExtractOptions) -> None:
        super().__init__(args, options)
        if args:
            raise ExtractorError(f"rhythm takes no arguments, got {args!r}")
        self._mel: np.ndarray | None = None

    def check(self) -> None:
        _need_librosa()
        for key in self.option_specs:
            value = self.opt(key)
            if not isinstance(value, bool) and value <= 0:
                raise ExtractorError(f"rhythm: {key} must be > 0, got {value}")

    def outputs(self) -> list[OutputSpec]:
        attrs = {
            "layout": json.dumps(LAYOUT), "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS,
            "fmin": FMIN, "fmax": FMAX, "tempo_window_s": TEMPO_WIN_S, "beat_context_s": BEAT_CTX_S,
            "librosa": getattr(librosa, "__version__", "absent"), **self.resolved_options(),
        }
        outs = [OutputSpec("rhythm", (DIM,), "audio", layout=layout_string(LAYOUT), attrs=attrs)]
        if self.opt("beat_times"):
            outs.append(OutputSpec(BEATS, (MAX_BEATS,), "audio", dtype="float32",
                                   attrs={"unit": "seconds after the segment's start", "missing": -1.0}))
        return outs

    def needs(self) -> MediaNeeds:
        return MediaNeeds(audio=True, audio_context=CONTEXT_S)

    def load(self, device: str) -> None:
        _need_librosa()
        self._mel = librosa.filters.mel(sr=AUDIO_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN,
                                        fmax=FMAX, norm=None).astype(np.float32)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        feats, beats = self.analyse(chunk)
        out = {"rhythm": feats.astype(np.float16)}
        if self.opt("beat_times"):
            out[BEATS] = beat_rows(beats, chunk.first, chunk.seg_len)
        return out

    # --- analysis -------------------------------------------------------------------------------

    def compute(self, chunk: Chunk) -> np.ndarray:
        """The ``(chunk.count, DIM)`` float64 features, before the cast to the stored dtype."""
        return self.analyse(chunk)[0]

    def analyse(self, chunk: Chunk) -> tuple[np.ndarray, list[np.ndarray]]:
        """Features, and the beat times (seconds, absolute) of each segment of the chunk."""
        if self._mel is None:
            self.load("cpu")
        x, a0 = self._validate(chunk)
        bounds = dsp.segment_bounds(chunk.first - 1, chunk.count + 1, chunk.seg_len, AUDIO_RATE)
        j0, n = _frame_range(bounds)
        power = _stft_power(x, j0 * HOP - N_FFT // 2 - a0, n)  # (channels, bins, frames)
        centres = (j0 + np.arange(n)) * HOP
        sid = np.searchsorted(bounds, centres, side="right") - 1  # 0 = the segment before the chunk
        out = np.zeros((chunk.count, DIM))

        mix = power.mean(axis=0)
        mel = self._mel @ mix
        env = self._envelope(mel)
        tempo, strength = self._tempo(env, sid, j0, chunk.count + 1)
        out[:, COL["tempo_bpm"]] = tempo[1:]
        out[:, COL["tempo_strength"]] = strength[1:]
        change = tempo[1:] - tempo[:-1]
        if chunk.first == 0:
            change[0] = 0.0  # the first segment of a video has no previous one
        out[:, COL["tempo_change_bpm"]] = change
        rate, mean_env = self._onsets(env, sid, chunk.count + 1, chunk.seg_len)
        out[:, COL["onset_rate"]] = rate[1:]
        out[:, COL["onset_strength"]] = mean_env[1:]
        out[:, COL["percussive_share"]] = _percussive_share(mel, sid, chunk.count + 1)
        beats = self._beats(env, sid, tempo, j0, bounds)
        for k, b in enumerate(beats):
            out[k, COL["beat_count"]] = len(b)
            if len(b):
                out[k, COL["beat_strength"]] = np.mean(env[np.round(b * AUDIO_RATE / HOP).astype(int) - j0])
                out[k, COL["first_beat_s"]] = b[0] - bounds[k + 1] / AUDIO_RATE
            else:
                out[k, COL["first_beat_s"]] = -1.0
        if x.shape[0] == 2:
            out[:, COL["stereo"]] = 1.0
            for side, weight in zip(("left", "right"), _side_weights(power)):
                weight *= mix
                env_s = self._envelope(self._mel @ weight, mel)
                t_s, s_s = self._tempo(env_s, sid, j0, chunk.count + 1)
                out[:, COL[f"tempo_{side}_bpm"]] = t_s[1:]
                out[:, COL[f"tempo_strength_{side}"]] = s_s[1:]
                out[:, COL[f"onset_rate_{side}"]] = self._onsets(env_s, sid, chunk.count + 1, chunk.seg_len)[0][1:]
        return out, beats

    def _validate(self, chunk: Chunk) -> tuple[np.ndarray, int]:
        if chunk.audio is None:
            raise ValueError(f"{chunk.video_id}: rhythm needs audio but the chunk has none")
        if chunk.audio_rate != AUDIO_RATE:
            raise ValueError(f"rhythm needs {AUDIO_RATE} Hz audio, got {chunk.audio_rate}")
        if chunk.audio_context + 1e-9 < CONTEXT_S:
            raise ValueError(f"rhythm needs {CONTEXT_S}s of audio context, got {chunk.audio_context}s")
        if not MIN_SEG_S <= chunk.seg_len <= MAX_SEG_S:
            raise ValueError(f"rhythm supports segments of {MIN_SEG_S}s to {MAX_SEG_S}s, got {chunk.seg_len}s")
        x = np.asarray(chunk.audio, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] not in (1, 2):
            raise ValueError(f"rhythm expects (1 or 2 channels, samples) audio, got {x.shape}")
        return x, round((chunk.t0 - chunk.audio_context) * AUDIO_RATE)

    def _envelope(self, mel_power: np.ndarray, whole: np.ndarray | None = None) -> np.ndarray:
        """librosa's spectral-flux onset strength: mean over mel bands of the dB rise, lag 1.

        With ``whole`` (the mix's mel power), ``mel_power`` is one side's part of it and each
        band's rise counts in proportion to that side's share of the band: the dB rise is
        level-free, so a band the other side dominates would otherwise bring its onsets along.
        """
        level = librosa.power_to_db(mel_power, ref=1.0, amin=10.0 ** (FLOOR_DB / 10.0), top_db=None)
        if whole is None:
            env = librosa.onset.onset_strength(S=level, lag=LAG, max_size=MAX_SIZE, center=False, detrend=False)
        else:
            per_band = librosa.onset.onset_strength_multi(S=level, lag=LAG, max_size=MAX_SIZE, center=False,
                                                          detrend=False, aggregate=False)
            env = (per_band * (mel_power / np.maximum(whole, 1e-30))).mean(axis=0)
        # Reported one hop late: the rise is largest while an attack is still ~10 ms ahead of the
        # frame centre, so this puts sharp attacks on their own 10 ms frame (and onsets on whole
        # seconds into the segment that starts there, not the one before).
        return np.concatenate([[0.0], env[:-1]]).astype(env.dtype)

    def _tempo(self, env: np.ndarray, sid: np.ndarray, j0: int,
               count: int) -> tuple[np.ndarray, np.ndarray]:
        """Local tempo (BPM, 0 without onsets) and its tempogram value (0..1) per segment."""
        at = np.flatnonzero(_inner(sid, count) & ((j0 + np.arange(sid.size)) % TG_STRIDE == 0))
        per_seg = dsp.segment_reduce(tempogram(env, at), sid[at], count, "mean").T  # (lags, count)
        bpm = librosa.feature.tempo(tg=per_seg, sr=AUDIO_RATE, hop_length=HOP, aggregate=None,
                                    start_bpm=self.opt("start_bpm"), max_tempo=MAX_TEMPO)
        freqs = librosa.tempo_frequencies(_TEMPO_FRAMES, sr=AUDIO_RATE, hop_length=HOP)
        lag = np.argmin(np.abs(freqs[:, None] - bpm[None, :]), axis=0)
        strength = per_seg[lag, np.arange(count)]
        silent = per_seg.max(axis=0) <= 1e-9
        return np.where(silent, 0.0, bpm), np.where(silent, 0.0, strength)

    def _onsets(self, env: np.ndarray, sid: np.ndarray, count: int,
                seg_len: float) -> tuple[np.ndarray, np.ndarray]:
        """Onsets per second (librosa's peak picker, absolute dB threshold) and mean envelope."""
        peaks = librosa.util.peak_pick(env, delta=self.opt("onset_delta"), **PICK)
        mask = np.zeros(env.size)
        mask[peaks] = 1.0
        m = _inner(sid, count)
        rate = dsp.segment_reduce(mask[m], sid[m], count, "sum") / seg_len
        return rate, dsp.segment_reduce(env[m], sid[m], count, "mean")

    def _beats(self, env: np.ndarray, sid: np.ndarray, tempo: np.ndarray, j0: int,
               bounds: np.ndarray) -> list[np.ndarray]:
        """Beat times inside each segment of the chunk, one tracker window per segment."""
        count = bounds.size - 2
        starts = np.searchsorted(sid, np.arange(1, count + 1))  # first frame of each segment
        ends = np.searchsorted(sid, np.arange(2, count + 2))
        length = int((ends - starts).max()) + 2 * _BEAT_FRAMES
        rows = np.stack([env[s - _BEAT_FRAMES : s - _BEAT_FRAMES + length] for s in starts])
        live = (tempo[1:] > 0) & (rows > 0).any(axis=1)  # the tracker walks off an all-zero row
        out = [np.zeros(0) for _ in range(count)]
        if not live.any():
            return out
        _, hits = librosa.beat.beat_track(onset_envelope=rows[live], bpm=tempo[1:][live],
                                          sr=AUDIO_RATE, hop_length=HOP, sparse=False, trim=True,
                                          tightness=self.opt("tightness"))
        for row, k in zip(hits, np.flatnonzero(live)):
            frames = np.flatnonzero(row) + starts[k] - _BEAT_FRAMES
            frames = frames[(frames >= starts[k]) & (frames < ends[k])]
            out[k] = (j0 + frames) * HOP / AUDIO_RATE
        return out


def beat_rows(beats: list[np.ndarray], first: int, seg_len: float) -> np.ndarray:
    """``(len(beats), MAX_BEATS)`` float32: segment ``first + k``'s beat times minus its start, -1 padded."""
    starts = dsp.segment_bounds(first, len(beats), seg_len, AUDIO_RATE)[:-1] / AUDIO_RATE
    out = np.full((len(beats), MAX_BEATS), -1.0, np.float32)
    for k, b in enumerate(beats):
        b = b[:MAX_BEATS]
        out[k, :b.size] = b - starts[k]
    return out


def tempogram(env: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """librosa's autocorrelation tempogram (Hann window, max-normalised) at ``centres`` only.

    Row i equals column ``centres[i]`` of ``librosa.feature.tempogram(onset_envelope=env,
    win_length=TEMPO_WIN_S * 100, center=True)`` wherever that column's window lies inside ``env``
    (tested); computing every TG_STRIDE-th frame only is what makes it cheap.
    """
    windows = np.lib.stride_tricks.sliding_window_view(env, _TEMPO_FRAMES)[centres - _TEMPO_FRAMES // 2]
    hann = librosa.filters.get_window("hann", _TEMPO_FRAMES, fftbins=True)
    ac = librosa.autocorrelate(windows * hann, axis=-1)
    return librosa.util.normalize(ac, norm=np.inf, axis=-1)


def _inner(sid: np.ndarray, count: int) -> np.ndarray:
    """Frames of the segment before the chunk (0) and of the chunk's own segments (1..)."""
    return (sid >= 0) & (sid < count)


def _frame_range(bounds: np.ndarray) -> tuple[int, int]:
    """First frame and number of frames to analyse for segments ``bounds`` (one before the chunk).

    The tempogram of a frame of the previous segment reaches ``TEMPO_WIN_S / 2`` further back,
    a segment's beat window ``BEAT_CTX_S`` past its edges; two frames more cover lag and rounding.
    """
    reach = max(_TEMPO_FRAMES // 2 + 1, _BEAT_FRAMES) + 2
    j_lo = -(-int(bounds[0]) // HOP) - reach
    j_hi = -(-int(bounds[-1]) // HOP) + reach
    return j_lo, j_hi - j_lo


def _stft_power(x: np.ndarray, start: int, n: int) -> np.ndarray:
    """Power spectra of ``n`` frames from sample ``start`` of ``x`` (zeros outside), per channel.

    Scaled so a sine of amplitude A has power A**2 in its peak bin (0 dB at full scale).
    """
    seg = dsp.take(x, start, start + (n - 1) * HOP + N_FFT)
    spec = librosa.stft(seg, n_fft=N_FFT, hop_length=HOP, center=False, window="hann")
    window_sum = float(np.sum(librosa.filters.get_window("hann", N_FFT, fftbins=True)))
    mag = np.abs(spec)
    mag *= np.float32(2.0 / window_sum)
    return np.square(mag, out=mag)


def _side_weights(power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin weights of the left and right parts: 0 at a centred bin, 1 from 6 dB to one side."""
    lo, hi = PAN_SPLIT
    total = power[0] + power[1]
    total += np.float32(1e-30)
    left = np.divide(power[0], total, out=total)
    right = 1.0 - left
    for w in (left, right):
        w -= np.float32(lo)
        w *= np.float32(1.0 / (hi - lo))
        np.clip(w, 0.0, 1.0, out=w)
    return left, right


def _percussive_share(mel_power: np.ndarray, sid: np.ndarray, count: int) -> np.ndarray:
    """Percussive / (harmonic + percussive) energy per segment of the chunk (0 for silence).

    librosa's HPSS (soft masks, power 2) on the mel magnitude, over the chunk's frames plus
    half the harmonic kernel each side, so the median filters see the same frames in any chunk.
    """
    own = np.flatnonzero((sid >= 1) & (sid < count))
    half = HPSS_KERNEL[0] // 2 + 1
    lo, hi = own[0] - half, own[-1] + 1 + half
    harm, perc = librosa.decompose.hpss(np.sqrt(mel_power[:, lo:hi]), kernel_size=HPSS_KERNEL, power=2.0)
    keep = slice(half, half + own.size)
    p = dsp.segment_reduce((perc**2).sum(axis=0)[keep], sid[own] - 1, count - 1, "sum")
    h = dsp.segment_reduce((harm**2).sum(axis=0)[keep], sid[own] - 1, count - 1, "sum")
    return np.where(p + h > 1e-20, p / (p + h + 1e-30), 0.0)


assert CONTEXT_S * AUDIO_RATE >= MAX_SEG_S * AUDIO_RATE + (max(_TEMPO_FRAMES // 2 + 1, _BEAT_FRAMES) + 3) * HOP + N_FFT // 2
assert AUDIO_RATE % HOP == 0
