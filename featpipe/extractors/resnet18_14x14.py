"""ResNet-18 14x14 maps as AVST reads them (MUSIC-AVQA ``feat_script/extract_visual_feat_14x14``).

Spec ``resnet18-14x14`` (no arguments). torchvision's resnet18 with ImageNet weights, ``layer4``
at stride 1 (its first block's 3x3 conv and 1x1 downsample), so a 224x224 input gives a
(512, 14, 14) map instead of (512, 7, 7). Each segment's centre frame, at its native size, is
resized to 224x224 with PIL bilinear (what ``transforms.Resize([224, 224])`` does to the PIL
images AVST loads; the aspect ratio is not kept), scaled to [0, 1] and normalised with AVST's
mean (0.43216, 0.394666, 0.37645) and std (0.22803, 0.22145, 0.216989).

Outputs: ``resnet18-14x14`` (512, 14, 14) channels first, and ``resnet18-14x14-pooled`` (512,),
the mean of that map over its 196 cells. Weights: ``resnet18-f37072fd.pth`` (torchvision's
file) from ``--weights``, the featpipe weights folder or torch's hub cache.
"""

from __future__ import annotations

import numpy as np

from . import register
from .base import Chunk, MediaNeeds, OutputSpec
from .checkpoint import CheckpointExtractor

WEIGHTS_FILE = "resnet18-f37072fd.pth"  # torchvision's ResNet18_Weights.IMAGENET1K_V1
WEIGHTS_URL = "https://download.pytorch.org/models/" + WEIGHTS_FILE
SIZE = 224
MEAN = (0.43216, 0.394666, 0.37645)  # AVST's (Kinetics) statistics, not ImageNet's
STD = (0.22803, 0.22145, 0.216989)
LAYOUT = "torchvision's resnet18 state dict (conv1, bn1, layer1-4, fc)"


def build_network():
    """torchvision's resnet18 (random init) with ``layer4`` at stride 1."""
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    block = net.layer4[0]
    block.conv1.stride = (1, 1)
    block.downsample[0].stride = (1, 1)
    return net


def preprocess(frames: np.ndarray, size: int = SIZE):
    """uint8 ``(n, H, W, 3)`` RGB -> float32 ``(n, 3, size, size)``: PIL bilinear resize, AVST mean/std.

    The MUSIC-AVQA scripts' transform for their ResNet-18 14x14 (size 224) and R(2+1)D (size 112)
    features: ``Resize((size, size))`` on the PIL image, ``ToTensor``, ``Normalize`` (Kinetics statistics).
    """
    import torch
    from PIL import Image

    resized = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR))
                        for f in frames]) if len(frames) else np.zeros((0, size, size, 3), np.uint8)
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float().div(255.0)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@register
class ResNet18Map(CheckpointExtractor):
    """AVST's ResNet-18 14x14 visual map per segment, plus its spatial mean."""

    name = "resnet18-14x14"
    summary = "ResNet-18 (ImageNet, layer4 stride 1) 512x14x14 map + pooled 512-d per segment (AVST)"
    spec_help = "resnet18-14x14"
    examples = ("resnet18-14x14",)
    version = "1"
    option_specs: dict = {}
    weights_file = WEIGHTS_FILE
    weights_url = WEIGHTS_URL
    layout = LAYOUT
    build_network = staticmethod(build_network)

    def outputs(self) -> list[OutputSpec]:
        attrs = {"resize": f"PIL bilinear to {SIZE}x{SIZE} (aspect not kept)", "mean": list(MEAN), "std": list(STD),
                 "layer4_stride": 1}
        return [
            OutputSpec(self.name, (512, 14, 14), "visual", layout="layer4 output (channels, rows, columns)", attrs=attrs),
            OutputSpec(f"{self.name}-pooled", (512,), "visual", layout="mean of the 14x14 layer4 map", attrs=attrs),
        ]

    def needs(self) -> MediaNeeds:
        return MediaNeeds(frame_positions=(0.5,), frame_short_side=SIZE, native_frames=True)

    def feature_map(self, x):
        """``(n, 3, 224, 224)`` -> ``(n, 512, 14, 14)``: the stem and the four stages, no pooling."""
        n = self._net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))

    def extract(self, chunk: Chunk) -> dict[str, np.ndarray]:
        import torch

        if self._net is None:
            raise RuntimeError(f"{self.spec}: load() was not called")
        frames = chunk.frames[0.5]
        maps = np.empty((len(frames), 512, 14, 14), np.float32)
        bs = max(1, self.options.batch_size)
        with torch.inference_mode():
            for i in range(0, len(frames), bs):
                maps[i:i + bs] = self.feature_map(preprocess(frames[i:i + bs]).to(self._device)).float().cpu().numpy()
        return {self.name: maps, f"{self.name}-pooled": maps.mean(axis=(2, 3))}
