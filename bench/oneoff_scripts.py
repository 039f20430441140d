"""The careful one-off scripts bench_pipeline.py measures featpipe against, one per suite.

Each is what a researcher would write for one model over a folder of videos: one process, PyAV
with its own decoder threads, the model with torch threads = all cores, one video after another,
batches of 32. They compute the same features featpipe stores (bench_pipeline.py checks rows of
the first round against featpipe's cache).

The audio scripts take their arithmetic (log-mel, moviepy's 16 kHz, OpenL3's frontend) from
featpipe's model modules, and the motion script motion's and priors' ``compute``: the same
numbers a script using torchvggish / openl3 / its own numpy would compute. What is timed is the
orchestration around the arithmetic, which is what featpipe adds.

The audio encoder scripts (ast, beats, mert) decode with PyAV at 48 kHz, take the channel mean and
resample the whole recording once with featpipe's polyphase filter (``rates.resample``: another
resampler's transition band would move the rows by more than the check's tolerance), then cut the
windows themselves as docs/features.md states them: AST one 10.24 s window centred on each
segment, zeros outside the recording, through transformers' ``ASTFeatureExtractor`` and
``ASTModel``; BEATs and MERT the frame-level rule (10 s windows on an absolute grid keeping the
frames centred in their middle 6 s, shifted inside the recording at its ends; a segment's row the
mean of the frames centred in it), through the model's own preprocessing (BEATs's Kaldi fbank,
MERT's ``Wav2Vec2FeatureExtractor`` per window) and network (featpipe's ports: unilm's and m-a-p's
code cannot run here).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BATCH = 32
TESTS = Path(__file__).resolve().parent.parent / "tests"


# -- random weights in the official layouts (written once, with the tests' own writers) -------------
ENCODERS = {"ast": "ast-base", "beats": "BEATs_base_random.pt", "mert": "MERT-v1-95M"}  # suite -> what it reads


def random_weights(folder: Path, suites: list[str] | tuple[str, ...] = ("vggish", "openl3")) -> dict[str, Path]:
    """Random weights at real size for ``suites``: torchvggish's state dict, OpenL3's Keras-2 h5
    (mel256/music), an AST base folder (``save_pretrained``), a BEATs base checkpoint (unilm's
    ``.pt``), a MERT-v1-95M hub folder; written once, each only when a suite asks for it."""
    from featpipe.models import openl3 as ol3
    from featpipe.models import vggish as vg

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"vggish": folder / vg.MODEL_FILE, "openl3": folder / ol3.weight_filename("mel256", "music"),
             **{k: folder / v for k, v in ENCODERS.items()}}
    paths = {k: v for k, v in paths.items() if k in suites}
    if "vggish" in paths and not paths["vggish"].exists():
        import torch

        sys.path.insert(0, str(TESTS))
        from test_vggish import he_state

        torch.save(he_state(), paths["vggish"])
    if "openl3" in paths and not paths["openl3"].exists():
        sys.path.insert(0, str(TESTS))
        from test_openl3 import random_arrays, write_keras_h5

        write_keras_h5(paths["openl3"], random_arrays())  # the conv shapes do not depend on the mel size
    todo = {"mert-95M" if k == "mert" else k for k in ENCODERS if k in paths and not paths[k].exists()}
    if todo:
        from bench_audio_encoders import write_checkpoints  # AST/MERT/BEATs at real size, as that bench writes them

        write_checkpoints(folder, todo)
    return paths


# -- video ----------------------------------------------------------------------------------------
def centre_frames(path: str, short: int | None) -> list:
    """Decode every frame (PyAV's threads); the frame on screen at each second's centre, as PIL images."""
    import av

    out = []
    with av.open(path) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        n = int(float(c.duration / 1e6) if c.duration else float(s.duration * s.time_base))
        targets = [k + 0.5 for k in range(n)]
        prev, i = None, 0
        for f in c.decode(s):
            while i < n and f.time > targets[i] and prev is not None:
                out.append(_image(prev, short))
                i += 1
            prev = f
        while i < n and prev is not None:
            out.append(_image(prev, short))
            i += 1
    return out


def _image(frame, short: int | None):
    if short is None:
        return frame.to_image()
    w, h = frame.width, frame.height
    s = short / min(w, h)
    return frame.reformat(width=round(w * s), height=round(h * s), format="rgb24").to_image()


def script_clip(files: list[str], threads: int, short: int | None, device: str, out: Path | None) -> None:
    import open_clip
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)  # featpipe's clip:<model>/random seeds 0 the same way
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", device=device,
                                                                 precision="fp16" if device == "cuda" else "fp32")
    model.eval()
    dtype = torch.float16 if device == "cuda" else torch.float32
    with torch.inference_mode():
        for f in files:
            x = torch.stack([preprocess(im) for im in centre_frames(f, short)])
            rows = np.concatenate([model.encode_image(x[i:i + BATCH].to(device, dtype)).float().cpu().numpy()
                                   for i in range(0, len(x), BATCH)])
            save(out, f, rows, "clip")


def script_motion(files: list[str], out: Path | None) -> None:
    """motion + priors: every frame decoded, 5 per second kept at motion's size, all audio; the
    features' arithmetic is the extractors' own (``compute`` on one chunk holding the whole video)."""
    import av

    from featpipe.contracts import Chunk, ExtractOptions
    from featpipe.extractors import build
    from featpipe.extractors.motion import POSITIONS, SHORT_SIDE
    from featpipe.extractors.priors import CONTEXT_S

    motion, priors = build("motion", ExtractOptions()), build("priors", ExtractOptions())
    for f in files:
        with av.open(f) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            n = int(float(c.duration / 1e6) if c.duration else float(s.duration * s.time_base))
            targets = [k + p for k in range(n) for p in POSITIONS]
            kept, prev, i = [], None, 0
            for frame in c.decode(s):
                while i < len(targets) and frame.time > targets[i] and prev is not None:
                    kept.append(prev)
                    i += 1
                prev = frame
            kept += [prev] * (len(targets) - i)
        scale = SHORT_SIDE / min(prev.width, prev.height)
        w, h = round(prev.width * scale), round(prev.height * scale)
        rgb = np.stack([fr.reformat(width=w, height=h, format="rgb24").to_ndarray() for fr in kept])
        rgb = rgb.reshape(n, len(POSITIONS), h, w, 3)
        audio, duration = decode_audio48(f)
        ctx = round(CONTEXT_S * 48_000)
        audio = np.pad(audio, ((0, 0), (ctx, max(0, n * 48_000 + ctx - audio.shape[1]))))[:, :n * 48_000 + 2 * ctx]
        chunk = Chunk(Path(f).stem, 0, n, 1.0, duration, frames={p: rgb[:, j] for j, p in enumerate(POSITIONS)},
                      audio=audio, audio_context=CONTEXT_S)
        save(out, f, motion.extract(chunk)["motion"], "motion")
        save(out, f, priors.extract(chunk)["priors"], "priors")


# -- audio ----------------------------------------------------------------------------------------
def decode_audio48(path: str, rate: int = 48_000, moviepy: bool = False) -> tuple[np.ndarray, float]:
    """``(channels, n)`` float32 audio at ``rate`` from time 0, and the longest stated stream duration.

    ``moviepy``: 16-bit stereo, what moviepy's ``ffmpeg -ar R -ac 2 -f s16le`` reads (values / 32768).
    """
    import av

    with av.open(path) as c:
        a = c.streams.audio[0]
        stated = [float(s.duration * s.time_base) for s in (a, *c.streams.video[:1]) if s.duration]
        duration = max(stated) if stated else c.duration / 1e6
        start = c.start_time / 1e6 if c.start_time else 0.0
        layout = "stereo" if a.channels >= 2 or moviepy else "mono"
        res = av.AudioResampler(format="s16" if moviepy else "fltp", layout=layout, rate=rate)
        blocks, first = [], None
        for frame in c.decode(a):
            if first is None:
                first = round((frame.time - start) * rate)
            blocks += [r.to_ndarray() for r in res.resample(frame)]
        blocks += [r.to_ndarray() for r in res.resample(None)]
    audio = np.concatenate(blocks, axis=1)
    audio = (audio.reshape(-1, 2).T / 32768.0).astype(np.float32) if moviepy else audio.astype(np.float32)
    first = first or 0
    audio = np.pad(audio, ((0, 0), (first, 0))) if first > 0 else audio[:, -first:]
    return audio, duration


def script_vggish(files: list[str], threads: int, weights: str, device: str, out: Path | None) -> None:
    """MUSIC-AVQA's VGGish: moviepy's 16 kHz mono, one 0.96 s example per second, 128-d each."""
    import torch

    from featpipe.models import vggish as m

    torch.set_num_threads(threads)
    model = m.load_model(weights).to(device)
    pad = 64
    with torch.inference_mode():
        for f in files:
            audio, duration = decode_audio48(f, m.MOVIEPY_RATE, moviepy=True)  # moviepy's ffmpeg read
            n = int(duration)
            audio = np.pad(audio, ((0, 0), (pad, 3 * m.MOVIEPY_RATE + pad)))
            examples = m.log_mel_examples(np.stack([  # example k: 0.975 s from second k
                m.moviepy_16k(audio, -pad, k * m.SAMPLE_RATE, m.EXAMPLE_SAMPLES, duration) for k in range(n)]))
            rows = np.concatenate([model(torch.from_numpy(examples[i:i + BATCH]).to(device)).cpu().numpy()
                                   for i in range(0, n, BATCH)])
            save(out, f, rows, "vggish")


def script_openl3(files: list[str], threads: int, weights: str, device: str, out: Path | None) -> None:
    """OpenL3 mel256/music/512: 1 s mono windows centred every 0.1 s, averaged per second."""
    import torch

    from featpipe.models import openl3 as m

    torch.set_num_threads(threads)
    model = m.OpenL3Audio("mel256", 512)
    m.load_keras_weights(model, weights)
    model = model.eval().to(device, memory_format=torch.channels_last)
    frontend = m.Frontend("mel256", "v0.4").to(device)
    half = m.WINDOW // 2
    with torch.inference_mode():
        for f in files:
            audio, duration = decode_audio48(f)
            n = int(duration)
            mono = np.pad(audio.mean(axis=0), (half, m.WINDOW))
            windows = np.lib.stride_tricks.sliding_window_view(mono, m.WINDOW)[::m.HOP][:n * 10]
            emb = []
            for i in range(0, len(windows), BATCH):
                spec = frontend(torch.from_numpy(np.ascontiguousarray(windows[i:i + BATCH])).to(device))
                emb.append(model(spec.contiguous(memory_format=torch.channels_last)).cpu().numpy())
            save(out, f, np.concatenate(emb).reshape(n, 10, -1).mean(axis=1), "openl3")


# -- audio encoders --------------------------------------------------------------------------------
def mono_at(path: str, rate: int) -> tuple[np.ndarray, float]:
    """The recording's mono audio at ``rate`` (exactly ``round(duration * rate)`` samples) and its duration."""
    from featpipe.extractors.rates import resample

    audio, duration = decode_audio48(path)
    x, _ = resample(audio.mean(axis=0), 0, rate)
    total = round(duration * rate)
    return np.pad(x[:total], (0, max(0, total - len(x)))), duration


def script_ast(files: list[str], threads: int, folder: str, device: str, out: Path | None,
               window_s: float = 10.24) -> None:
    """AST: per segment one window of 10.24 s centred on it (zeros outside the recording), the pooled output."""
    import torch
    from transformers import ASTFeatureExtractor, ASTModel

    torch.set_num_threads(threads)
    fe = ASTFeatureExtractor.from_pretrained(folder)
    model = ASTModel.from_pretrained(folder).eval().to(device)
    rate = int(fe.sampling_rate)
    n = round(window_s * rate)
    with torch.inference_mode():
        for f in files:
            x, duration = mono_at(f, rate)
            segs = int(duration)
            wins = np.zeros((segs, n), np.float32)
            for k in range(segs):
                start = round((k + 0.5) * rate) - n // 2
                lo, hi = max(start, 0), min(start + n, len(x))
                wins[k, lo - start:hi - start] = x[lo:hi]
            rows = []
            for i in range(0, segs, BATCH):
                feats = fe(list(wins[i:i + BATCH]), sampling_rate=rate, return_tensors="pt")["input_values"]
                rows.append(model(input_values=feats.to(device)).pooler_output.float().cpu().numpy())
            save(out, f, np.concatenate(rows), "ast")


def framewise_rows(x: np.ndarray, duration: float, rate: int, stride: int, offset: float, min_len: int, encode,
                   window_s: float = 10.0, context_s: float = 2.0) -> np.ndarray:
    """docs/features.md's frame-level rule over one recording ``x``: ``(segments, states, D)`` rows.

    Window j keeps the frames centred in ``[j*hop, (j+1)*hop)`` (hop = window - 2 x context, both in
    whole frame strides) and reads ``[j*hop - context, ... + window)`` moved inside the recording;
    frame i of a window starting at s is centred at ``s + offset + i*stride``; ``encode`` takes a
    batch of equal-length windows and returns ``(B, states, T, D)``."""
    ctx = round(context_s * rate / stride) * stride
    hop = max(stride, round((window_s - 2 * context_s) * rate / stride) * stride)
    length, total = hop + 2 * ctx, len(x)
    last = max(0, (total - length) // stride * stride)
    wins = []
    for j in range(total // hop + 1):
        if j * hop >= total:
            break
        start = min(max(j * hop - ctx, 0), last)
        if min(length, total - start) >= min_len:
            wins.append((start, min(length, total - start), j * hop, (j + 1) * hop))
    centres, frames = [], []
    by_len: dict[int, list] = {}
    for w in wins:
        by_len.setdefault(w[1], []).append(w)
    states = {}
    for ln, ws in by_len.items():  # equal lengths in one batch: nothing is padded
        for i in range(0, len(ws), BATCH):
            part = ws[i:i + BATCH]
            for w, st in zip(part, encode(np.stack([x[w[0]:w[0] + ln] for w in part]))):
                states[w] = st
    for w in wins:
        st = states[w]
        c = w[0] + offset + stride * np.arange(st.shape[1])
        keep = (c >= w[2]) & (c < w[3]) & (c < w[0] + w[1])
        centres.append(c[keep] / rate)
        frames.append(st[:, keep])
    centres, frames = np.concatenate(centres), np.concatenate(frames, axis=1)
    rows = []
    for k in range(int(duration)):
        m = (centres >= k) & (centres < k + 1)
        rows.append(frames[:, m].mean(axis=1) if m.any() else frames[:, np.argmin(np.abs(centres - k - 0.5))])
    return np.stack(rows)


def script_beats(files: list[str], threads: int, checkpoint: str, device: str, out: Path | None) -> None:
    """BEATs: 16 kHz x 2**15, Kaldi fbank, the encoder's last layer per time patch, the frame-level rule."""
    import torch

    from featpipe.models import beats as m

    torch.set_num_threads(threads)
    model = m.load_checkpoint(checkpoint).eval().to(device)
    p, last = model.cfg.input_patch_size, model.cfg.encoder_layers
    span = (p - 1) * m.FRAME_SHIFT + m.FRAME_LENGTH  # the samples one time patch reads

    def encode(batch):
        wave = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(device)
        return model(m.preprocess(wave), layers=(last,)).float().cpu().numpy()

    with torch.inference_mode():
        for f in files:
            x, duration = mono_at(f, m.SAMPLE_RATE)
            rows = framewise_rows(x, duration, m.SAMPLE_RATE, p * m.FRAME_SHIFT, (span - 1) / 2, span, encode)
            save(out, f, rows[:, 0], "beats")


def script_mert(files: list[str], threads: int, folder: str, device: str, out: Path | None) -> None:
    """MERT-v1: 24 kHz, Wav2Vec2FeatureExtractor per window, every hidden state (13 for 95M), the frame-level rule."""
    import json

    import torch
    from transformers import Wav2Vec2FeatureExtractor

    from featpipe.models import mert as m

    torch.set_num_threads(threads)
    cfg = json.loads((Path(folder) / "config.json").read_text())
    fe = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    model = m.load(Path(folder), cfg).to(device)
    rate = int(fe.sampling_rate)
    rf, stride = 1, 1  # the conv stack's receptive field and stride
    for k, s in zip(cfg["conv_kernel"], cfg["conv_stride"]):
        rf, stride = rf + (k - 1) * stride, stride * s

    def encode(batch):
        values = fe(list(batch), sampling_rate=rate, return_tensors="np")["input_values"]
        states = model(torch.from_numpy(np.asarray(values, np.float32)).to(device))
        return torch.stack(states, dim=1).float().cpu().numpy()

    with torch.inference_mode():
        for f in files:
            x, duration = mono_at(f, rate)
            save(out, f, framewise_rows(x, duration, rate, stride, (rf - 1) / 2, rf, encode), "mert")


def save(out: Path | None, video: str, rows: np.ndarray, feature: str) -> None:
    """``out/<feature>/<video stem>.npy`` (round 1 only: the bench compares it with featpipe's cache)."""
    if out is not None:
        (out / feature).mkdir(exist_ok=True)
        np.save(out / feature / f"{Path(video).stem}.npy", rows.astype(np.float32))


def run(kind: str, files: list[str], threads: int, device: str, weights: str | None, out: Path | None) -> None:
    """Run the script ``<suite>:<variant>`` over ``files`` (bench_pipeline.py's child process)."""
    suite, _, variant = kind.partition(":")
    if suite == "motion":
        script_motion(files, out)
    elif suite == "clip":
        script_clip(files, threads, 224 if variant.endswith("-224") else None, device, out)
    elif suite == "vggish":
        script_vggish(files, threads, weights, device, out)
    elif suite == "openl3":
        script_openl3(files, threads, weights, device, out)
    elif suite == "ast":
        script_ast(files, threads, weights, device, out)
    elif suite == "beats":
        script_beats(files, threads, weights, device, out)
    elif suite == "mert":
        script_mert(files, threads, weights, device, out)
    else:
        raise SystemExit(f"no script {kind!r}")
