"""R(2+1)D-18 features as MUSIC-AVQA extracts them (``feat_script/extract_visual_feat/extract_3D_feat.py``).

Spec ``r2plus1d-18`` (no arguments). torchvision's ``r2plus1d_18`` with Kinetics-400 weights,
its classifier removed: each segment's centre frame is one single-frame clip (MUSIC-AVQA builds
clips of ``T = 1`` frame, one per second), resized to 112x112 by PIL bilinear and normalised
with the Kinetics mean/std (:func:`featpipe.extractors.resnet18_14x14.preprocess`), and the
output is the network's global average pool, (512,) per segment. MUSIC-AVQA-R's MCCD reads these
``r2plus1d`` features. Weights: ``r2plus1d_18-91a641e6.pth`` (torchvision's file).
"""

from __future__ import annotations

import numpy as np

from . import register
from .base import Chunk, MediaNeeds, OutputSpec
from .checkpoint import CheckpointExtractor
from .resnet18_14x14 import MEAN, STD, preprocess

WEIGHTS_FILE = "r2plus1d_18-91a641e6.pth"  # torchvision's R2Plus1D_18_Weights.KINETICS400_V1
WEIGHTS_URL = "https://download.pytorch.org/models/" + WEIGHTS_FILE
SIZE = 112
LAYOUT = "torchvision's r2plus1d_18 state dict (stem, layer1-4, fc)"


def build_network():
    import torchvision

    return torchvision.models.video.r2plus1d_18(weights=None)


@register
class R2Plus1D18(CheckpointExtractor):
    """R(2+1)D-18 (Kinetics) 512-d feature of each segment's centre frame as a one-frame clip."""

    name = "r2plus1d-18"
    summary = "R(2+1)D-18 (Kinetics) 512-d per segment, one-frame clips at 112x112 (MUSIC-AVQA r2plus1d)"
    spec_help = "r2plus1d-18"
    examples = ("r2plus1d-18",)
    version = "1"
    option_specs: dict = {}
    weights_file = WEIGHTS_FILE
    weights_url = WEIGHTS_URL
    layout = LAYOUT
    build_network = staticmethod(build_network)

    def outputs(self) -> list[OutputSpec]:
        attrs = {"resize": f"PIL bilinear to {SIZE}x{SIZE} (aspect not kept)", "mean": list(MEAN), "std": list(STD),
                 "clip_frames": 1}
        return [OutputSpec(self.name, (512,), "visual", layout="global average pool before the classifier", attrs=attrs)]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(frame_positions=(0.5,), frame_short_side=SIZE, native_frames=True)

    def features(self, clips):
        """``(n, 3, T, 112, 112)`` -> ``(n, 512)``: everything but the classifier."""
        n = self._net
        x = n.layer4(n.layer3(n.layer2(n.layer1(n.stem(clips)))))
        return n.avgpool(x).flatten(1)

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        import torch

        if self._net is None:
            raise RuntimeError(f"{self.spec}: load() was not called")
        frames = chunk.frames[0.5]
        out = np.empty((len(frames), 512), np.float32)
        bs = max(1, self.options.batch_size)
        with torch.inference_mode():
            for i in range(0, len(frames), bs):
                clips = preprocess(frames[i:i + bs], SIZE).unsqueeze(2).to(self._device)  # T = 1
                out[i:i + bs] = self.features(clips).float().cpu().numpy()
        return {self.name: out}
