"""The training loop shared by every torch head: Adam, cross-entropy, early stopping on validation.

Deterministic on the CPU: :func:`seed_everything` before building the model, and :func:`fit`
reseeds torch (dropout) and draws the batch order from ``numpy.random.default_rng(seed)``, so the
same seed, data and thread count give the same weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .batches import Batch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (None: leave torch's setting), restoring it afterwards.

    Heads default to 1: their matrices are small, and on a shared 2-core machine a 3-layer MLP
    step took 3.2 ms with one thread and 60 ms with two (OpenMP threads spin-waiting on each
    other)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loss_and_hits(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
    # y == -1: an answer/label the vocabulary lacks; no loss, always counted wrong.
    loss = F.cross_entropy(logits, y, ignore_index=-1, reduction="sum") if (y >= 0).any() else logits.sum() * 0
    return loss, int((logits.argmax(1) == y).sum())


@torch.no_grad()
def predict_logits(model: nn.Module, batches: Iterable[Batch], n: int) -> np.ndarray:
    """Logits for all ``n`` samples, in the original order."""
    model.eval()
    out = None
    for idx, kw, _ in batches:
        logits = model(**kw).float().numpy()
        if out is None:
            out = np.zeros((n, logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    if out is None:
        raise ValueError("nothing to predict: no samples")
    return out


@torch.no_grad()
def _evaluate(model: nn.Module, batches: Iterable[Batch]) -> tuple[float, float]:
    model.eval()
    loss = 0.0
    hits = n = 0
    for _, kw, y in batches:
        lo, h = _loss_and_hits(model(**kw), y)
        loss += float(lo)
        hits += h
        n += len(y)
    return loss / max(n, 1), hits / max(n, 1)


def fit(model: nn.Module, train, val, *, lr: float = 1e-3, weight_decay: float = 0.0,
        max_epochs: int = 100, patience: int = 10, seed: int = 0, progress: bool = False,
        desc: str = "train", schedule: str = "constant") -> dict:
    """Train ``model`` on ``train`` batches, stop when validation accuracy has not improved for
    ``patience`` epochs, and leave the best epoch's weights in ``model``.

    ``schedule``: "constant" learning rate, or "cosine": decayed from ``lr`` to 0 over
    ``max_epochs`` (half a cosine, stepped once per epoch).

    ``train``/``val`` are batch sources (:class:`heads.batches.AvqaBatches` or ``ClipBatches``);
    ``val`` may be None (then the last epoch is kept). Returns the history: one dict per epoch
    (losses, accuracies, seconds, and seconds spent in forward+backward, in the optimiser step
    and in making batches), ``best_epoch`` and ``stopped_early``.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown learning-rate schedule {schedule!r} (constant or cosine)")
    # fused: one kernel over all parameters; the per-tensor loop cost ~1.6 ms a step, a tenth of
    # an AVQA step and half a question-only step (bench/bench_heads.py)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    epochs: list[dict] = []
    best = (-1.0, float("inf"))
    best_state, best_epoch, bad = None, 0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_epochs, desc=desc, unit="epoch")
    for epoch in range(1, max_epochs + 1):
        if schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / max_epochs))
        model.train()
        t0 = time.perf_counter()
        t_fb = t_step = 0.0
        loss_sum, hits, n = 0.0, 0, 0
        it = iter(train.train(rng))
        while True:
            try:
                _, kw, y = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss, h = _loss_and_hits(model(**kw), y)
            (loss / max(int((y >= 0).sum()), 1)).backward()
            t2 = time.perf_counter()
            opt.step()
            t_step += time.perf_counter() - t2
            t_fb += t2 - t1
            loss_sum += loss.item()
            hits += h
            n += len(y)
        seconds = time.perf_counter() - t0
        rec = {"epoch": epoch, "train_loss": loss_sum / max(n, 1), "train_acc": hits / max(n, 1),
               "seconds": seconds, "fwd_bwd_seconds": t_fb, "step_seconds": t_step,
               "batch_seconds": seconds - t_fb - t_step}
        if val is not None and len(val):
            rec["val_loss"], rec["val_acc"] = _evaluate(model, val.eval())
            score = (rec["val_acc"], rec["val_loss"])
            improved = score[0] > best[0] or (score[0] == best[0] and score[1] < best[1])
        else:
            improved = True
        epochs.append(rec)
        if improved:
            best = (rec.get("val_acc", 0.0), rec.get("val_loss", 0.0))
            best_state, best_epoch, bad = copy.deepcopy(model.state_dict()), epoch, 0
        else:
            bad += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("train_loss", "val_acc") if k in rec})
        if bad >= patience:
            break
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"epochs": epochs, "best_epoch": best_epoch, "stopped_early": len(epochs) < max_epochs}
