"""ResNet-18 14x14 (AVST) and R(2+1)D-18 against torchvision's own pipelines; every extractor in one CLI run.

Reference: AVST's transform built from torchvision (``Resize([224, 224])`` on a PIL image,
``ToTensor``, ``Normalize`` with AVST's mean/std) and torchvision's ``resnet18`` full forward
with ``layer4``'s stride set to 1, its ``layer4`` and ``avgpool`` outputs taken with hooks.
Tolerance: preprocessed pixels equal to 1e-6; maps and pooled vectors cosine >= 1 - 1e-6 per
segment, max abs difference <= 1e-4 of the largest value (float32). The weight file is written
here in torchvision's layout (He-initialised convs, random batch-norm statistics). R(2+1)D-18:
MUSIC-AVQA's construction (``nn.Sequential(*children[:-1])`` on one-frame clips), same tolerance.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image
from torchvision import transforms

from featpipe import cli
from featpipe import open_cache
from featpipe.extractors import Chunk, ExtractOptions, ExtractorError, WeightsError, build
from featpipe.extractors import r2plus1d_18 as r21
from featpipe.extractors import resnet18_14x14 as r
from featpipe.models import openl3 as ol3
from featpipe.models import vggish as vg
from media import write_clip

AVST_MEAN, AVST_STD = [0.43216, 0.394666, 0.37645], [0.22803, 0.22145, 0.216989]


def random_resnet18_state(seed: int = 0, build=torchvision.models.resnet18) -> dict[str, torch.Tensor]:
    """A torchvision network's state dict: its He init, with random batch-norm affine and statistics."""
    torch.manual_seed(seed)
    net = build(weights=None)
    g = torch.Generator().manual_seed(seed)
    for mod in net.modules():
        if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            n = mod.num_features
            mod.weight.data = 0.5 + torch.rand(n, generator=g)
            mod.bias.data = 0.1 * torch.randn(n, generator=g)
            mod.running_mean = 0.1 * torch.randn(n, generator=g)
            mod.running_var = 0.5 + torch.rand(n, generator=g)
    return net.state_dict()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resnet-weights")
    state = random_resnet18_state()
    torch.save(state, folder / r.WEIGHTS_FILE)
    torch.save(random_resnet18_state(1, torchvision.models.video.r2plus1d_18), folder / r21.WEIGHTS_FILE)
    return folder, state


@pytest.fixture(scope="module")
def extractor(weights):
    ext = build("resnet18-14x14", ExtractOptions(weights=str(weights[0]), batch_size=4))
    ext.check()
    ext.load("cpu")
    return ext


def avst_transform(frame: np.ndarray) -> torch.Tensor:
    t = transforms.Compose([transforms.Resize([224, 224]), transforms.ToTensor(), transforms.Normalize(AVST_MEAN, AVST_STD)])
    return t(Image.fromarray(frame))


def reference(state, frames: np.ndarray, stride: int = 1, transform=avst_transform) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's resnet18 forward (layer4 stride changed), its layer4 and avgpool outputs."""
    net = torchvision.models.resnet18(weights=None)
    net.load_state_dict(state)
    net.layer4[0].conv1.stride = (stride, stride)
    net.layer4[0].downsample[0].stride = (stride, stride)
    net.eval()
    seen = {}
    net.layer4.register_forward_hook(lambda mod, inp, out: seen.__setitem__("map", out))
    net.avgpool.register_forward_hook(lambda mod, inp, out: seen.__setitem__("pool", out))
    with torch.no_grad():
        net(torch.stack([transform(f) for f in frames]))
    return seen["map"].numpy(), seen["pool"].flatten(1).numpy()


def scenes(n: int, h: int = 360, w: int = 640, seed: int = 0) -> np.ndarray:
    """Frames with shapes, gradients and noise, different per frame (a 16:9 picture, as most videos)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        img = np.stack([np.sin(2 * np.pi * (xx * rng.uniform(1, 6) + yy * rng.uniform(1, 6) + c / 3)) for c in range(3)], -1)
        cx, cy, rad = rng.uniform(0.1, 0.6), rng.uniform(0.1, 0.5), rng.uniform(0.05, 0.2)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < rad ** 2] = rng.uniform(-1, 1, 3)
        out[i] = np.clip(127.5 + 100 * img + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
    return out


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def chunk_of(frames: np.ndarray, first: int = 0) -> Chunk:
    return Chunk("v", first, len(frames), 1.0, 10.0, frames={0.5: frames})


# ----------------------------------------------------------------------------- tests


def test_preprocessing_equals_avst_transform():
    frames = scenes(3)
    ours = r.preprocess(frames).numpy()
    ref = torch.stack([avst_transform(f) for f in frames]).numpy()
    assert ours.shape == (3, 3, 224, 224)
    assert np.abs(ours - ref).max() <= 1e-6


def test_maps_equal_torchvision_forward(extractor, weights):
    frames = scenes(5, seed=1)
    out = extractor.extract(chunk_of(frames))
    ref_map, ref_pool = reference(weights[1], frames)
    got_map, got_pool = out["resnet18-14x14"], out["resnet18-14x14-pooled"]
    assert got_map.shape == (5, 512, 14, 14) and got_pool.shape == (5, 512) and got_map.dtype == np.float32
    for got, ref in ((got_map, ref_map), (got_pool, ref_pool)):
        assert cosine_rows(got, ref).min() >= 1 - 1e-6
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    assert cosine_rows(got_map[:-1], got_map[1:]).max() < 0.9999  # frames are told apart at the tolerance


def test_tolerance_catches_wrong_preprocessing(weights):
    """Common mistakes land below cosine 0.9999 on the maps, far from the 1 - 1e-6 bound."""
    frames = scenes(2, seed=2)
    ref_map, _ = reference(weights[1], frames)

    def imagenet(f):
        t = transforms.Compose([transforms.Resize([224, 224]), transforms.ToTensor(),
                                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        return t(Image.fromarray(f))

    def centre_crop(f):
        t = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor(),
                                transforms.Normalize(AVST_MEAN, AVST_STD)])
        return t(Image.fromarray(f))

    def bgr(f):
        return avst_transform(np.ascontiguousarray(f[..., ::-1]))

    for name, tf in (("ImageNet mean/std", imagenet), ("centre crop", centre_crop), ("BGR", bgr)):
        bad, _ = reference(weights[1], frames, transform=tf)
        assert cosine_rows(bad, ref_map).min() < 0.9999, name
    map7, _ = reference(weights[1], frames, stride=2)
    assert map7.shape[-1] == 7  # torchvision's own stride gives 7x7: the stride change is what makes 14x14


def test_chunked_equals_whole_and_weights_errors(extractor, weights, tmp_path, monkeypatch):
    frames = scenes(6, h=240, w=320, seed=3)
    whole = extractor.extract(chunk_of(frames))
    parts = [extractor.extract(chunk_of(frames[i:i + 4], i)) for i in (0, 4)]
    for name, arr in whole.items():
        np.testing.assert_allclose(np.concatenate([p[name] for p in parts]), arr, rtol=1e-4, atol=1e-4 * np.abs(arr).max())
    assert extractor.needs().native_frames and extractor.needs().frame_positions == (0.5,)

    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEATPIPE_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsError) as err:
        build("resnet18-14x14", ExtractOptions()).check()
    msg = str(err.value)
    assert "\n" not in msg and r.WEIGHTS_FILE in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    hub = tmp_path / "torch" / "hub" / "checkpoints"  # torchvision's own cache is found
    hub.mkdir(parents=True)
    (hub / r.WEIGHTS_FILE).write_bytes((weights[0] / r.WEIGHTS_FILE).read_bytes())
    ext = build("resnet18-14x14", ExtractOptions())
    ext.check()
    assert ext.weights_identity().startswith("sha256:")
    bad = dict(weights[1])
    bad["layer4.0.conv1.weight"] = bad["layer4.0.conv1.weight"][:, :128]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="layer4.0.conv1.weight has shape"):
        build("resnet18-14x14", ExtractOptions(weights=str(tmp_path / "bad.pth"))).check()
    with pytest.raises(ExtractorError):
        build("resnet18-14x14:x", ExtractOptions())


def test_r2plus1d_equals_musicavqa_construction(weights):
    """MUSIC-AVQA's extract_3D_feat: r2plus1d_18 without its last child, one-frame clips, 112x112 PIL resize."""
    folder, _ = weights
    ext = build("r2plus1d-18", ExtractOptions(weights=str(folder), batch_size=3))
    ext.check()
    ext.load("cpu")
    frames = scenes(4, seed=4)
    got = ext.extract(chunk_of(frames))["r2plus1d-18"]
    net = torchvision.models.video.r2plus1d_18(weights=None)
    net.load_state_dict(torch.load(folder / r21.WEIGHTS_FILE, weights_only=True))
    body = torch.nn.Sequential(*list(net.children())[:-1]).eval()
    tf = transforms.Compose([transforms.Resize((112, 112)), transforms.ToTensor(), transforms.Normalize(AVST_MEAN, AVST_STD)])
    clips = torch.stack([tf(Image.fromarray(f)) for f in frames]).unsqueeze(2)  # (N, C, T=1, H, W)
    with torch.no_grad():
        ref = body(clips).squeeze().numpy()
    assert got.shape == (4, 512)
    assert cosine_rows(got, ref).min() >= 1 - 1e-6
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    with torch.no_grad():  # 224x224 input (a wrong resize) is told apart at the tolerance
        bad = body(torch.stack([avst_transform(f) for f in frames]).unsqueeze(2)).squeeze().numpy()
    assert cosine_rows(bad, ref).min() < 0.9999


def test_all_extractors_in_one_cli_run(tmp_path, tiny_clip, weights):
    """vggish and resnet18-14x14 beside CLIP, OpenL3, CLAP and priors: one run, one decode each, one timeline."""
    from test_clap import make_tiny_clap
    from test_openl3 import random_arrays, write_keras_h5
    from test_vggish import he_state

    folder = weights[0]  # --weights takes one folder holding every file under its official name
    write_keras_h5(folder / ol3.weight_filename("mel128", "music"), random_arrays())
    torch.save(he_state(), folder / vg.MODEL_FILE)
    clap = make_tiny_clap(tmp_path / "tiny-clap")
    videos = tmp_path / "clips"
    videos.mkdir()
    for i, secs in enumerate((2.0, 3.0)):
        write_clip(videos / f"v{i}.mp4", seconds=secs, fps=10, size=(96, 64), freq=300.0 + 100 * i)
    cache = tmp_path / "c.h5"
    res = CliRunner().invoke(cli.main, [
        "extract", str(videos), "-o", str(cache), "--visual", f"clip:{tiny_clip}/random",
        "--visual", "resnet18-14x14", "--visual", "r2plus1d-18", "--audio", "vggish", "--audio", "openl3:mel128/music/512",
        "--audio", f"clap:{clap}", "--audio", "priors", "--weights", str(folder),
        "--max-seconds", "4", "--workers", "1", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    desc = json.loads(CliRunner().invoke(cli.main, ["info", str(cache), "--json"]).output)
    shapes = {"clip-tiny-clip-random": None, "openl3-mel128-music-512": (512,), "clap-tiny-clap": None,
              "priors": (70,), "vggish": (128,), "resnet18-14x14": (512, 14, 14), "resnet18-14x14-pooled": (512,),
              "r2plus1d-18": (512,)}
    assert set(shapes) <= set(desc["features"])
    timelines = {n: {k: desc["features"][n]["timeline"][k] for k in ("hop", "start", "on_segment_timeline")} for n in shapes}
    assert all(t == timelines["priors"] for t in timelines.values())
    with open_cache(cache) as c:
        for vid, valid in (("v0", 2), ("v1", 3)):
            got = {n: c.get(vid, n) for n in shapes}
            for n, a in got.items():
                assert a.data.shape[0] == 4 and (shapes[n] is None or a.data.shape[1:] == shapes[n]), n
                assert np.isfinite(a.data.astype(np.float32)).all()
            m14 = got["resnet18-14x14"].data
            assert m14.dtype == np.float16
            np.testing.assert_array_equal(m14[valid:], np.repeat(m14[valid - 1:valid], 4 - valid, 0))  # padded
            pooled = got["resnet18-14x14-pooled"].data.astype(np.float32)
            np.testing.assert_allclose(m14.astype(np.float32).mean(axis=(2, 3)), pooled, atol=2e-3 * np.abs(pooled).max())
        assert c.info("vggish").weights.startswith("sha256:")
    with h5py.File(cache, "r") as f:  # channels first, as AVST reads (T, 512, 14, 14); both videos appended
        assert f["features/resnet18-14x14/data"].shape == (8, 512, 14, 14)
    listing = CliRunner().invoke(cli.main, ["models"]).output
    assert "vggish" in listing and "resnet18-14x14" in listing and "r2plus1d-18" in listing



@pytest.mark.parametrize("spec,file", [("resnet18-14x14", r.WEIGHTS_FILE), ("r2plus1d-18", r21.WEIGHTS_FILE)])
def test_weights_given_for_one_extractor_by_name(weights, tmp_path, monkeypatch, spec, file):
    """``--weights NAME=PATH`` reaches the extractor it names (and no other)."""
    monkeypatch.setenv("FEATPIPE_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FEATPIPE_NO_DOWNLOAD", "1")
    path = str(weights[0] / file)
    ext = build(spec, ExtractOptions(weights_by=((spec, path),)))
    ext.check()
    assert ext.weights_path == path
    with pytest.raises(WeightsError):
        build(spec, ExtractOptions(weights_by=(("vggish", path),))).check()
