"""motion: synthetic frames with known answers, built straight into Chunk objects."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featpipe.extractors import Chunk, ExtractorError, build
from featpipe.extractors.motion import GLOBALS, POSITIONS, Motion, area_matrix


def chunk(frames_at: dict[float, np.ndarray]) -> Chunk:
    count = next(iter(frames_at.values())).shape[0]
    return Chunk("v", 0, count, 1.0, float(count), frames=frames_at)


def flat(colour: tuple[int, int, int], count: int = 2, h: int = 72, w: int = 128) -> Chunk:
    fr = np.empty((count, h, w, 3), np.uint8)
    fr[...] = colour
    return chunk({p: fr for p in POSITIONS})


def block(m: Motion, f: np.ndarray, name: str) -> np.ndarray:
    a, b = next((a, b) for n, a, b in m.layout if n == name)
    return f[:, a:b]


@pytest.mark.parametrize("spec, grid", [("motion", 4), ("motion:2", 2), ("motion:3", 3), ("motion:16", 16)])
def test_grid_arg_and_layout_match_output(spec: str, grid: int) -> None:
    m = build(spec)
    assert isinstance(m, Motion) and m.grid == grid
    assert m.size % grid == 0 and m.size >= 60
    (out,) = m.outputs()
    dim = 7 * grid * grid + len(GLOBALS)
    assert out.shape == (dim,) and m.layout[-1][2] == dim and out.modality == "visual"
    assert json.loads(out.attrs["layout"]) == [list(t) for t in m.layout]
    assert [a for _, a, _ in m.layout] == [0] + [b for _, _, b in m.layout[:-1]]
    assert out.layout.startswith(f"motion[0:{grid * grid}] L_mean[{grid * grid}:")
    res = m.extract(flat((10, 20, 30), count=3))
    assert res["motion"].shape == (3, dim) and res["motion"].dtype == np.float32


@pytest.mark.parametrize("spec", ["motion:x", "motion:0", "motion:17", "motion:2.5"])
def test_bad_grid_args(spec: str) -> None:
    with pytest.raises(ExtractorError, match="grid"):
        build(spec)


def test_needs_several_small_frames() -> None:
    n = build("motion").needs()
    assert n.frame_positions == POSITIONS and 0 < n.frame_short_side <= 96 and not n.audio


def test_flat_colour_means() -> None:
    m = build("motion:2")
    f = m.compute(flat((255, 0, 0)))
    for name, want in (("L_mean", 53.24), ("a_mean", 80.09), ("b_mean", 67.20)):
        np.testing.assert_allclose(block(m, f, name), want, atol=0.02)  # sRGB red in CIE Lab
    for name in ("motion", "L_std", "a_std", "b_std"):
        np.testing.assert_allclose(block(m, f, name), 0.0, atol=1e-3)
    np.testing.assert_allclose(block(m, f, "colourfulness"), 0.3 * np.hypot(255, 127.5), rtol=1e-4)
    g = m.compute(flat((119, 119, 119)))
    np.testing.assert_allclose(block(m, g, "L_mean"), 50.0, atol=0.1)  # sRGB 119 is mid-grey
    np.testing.assert_allclose(block(m, g, "chroma_mean"), 0.0, atol=1e-2)


def test_cells_are_row_major_from_top_left() -> None:
    fr = np.zeros((1, 90, 160, 3), np.uint8)
    fr[:, :45, :80] = (255, 255, 255)  # top-left white, the rest black
    fr[:, 45:, 80:] = (0, 0, 255)  # bottom-right blue
    m = build("motion:2")
    f = m.compute(chunk({p: fr for p in POSITIONS}))
    np.testing.assert_allclose(block(m, f, "L_mean")[0], [100, 0, 0, 32.3], atol=0.1)
    assert block(m, f, "b_mean")[0, 3] < -100  # blue is strongly negative b*


def test_moving_square_moves_only_its_cell() -> None:
    h, w = 96, 128  # not the working size: exercises the resampling too
    frames_at = {}
    for i, p in enumerate(POSITIONS):
        fr = np.full((2, h, w, 3), 90, np.uint8)
        x0 = 4 + 6 * i  # slides right inside the top-left quarter (48 x 64)
        fr[0, 10:22, x0 : x0 + 12] = (250, 240, 30)
        frames_at[p] = fr  # segment 1 stays still
    m = build("motion:2")
    f = m.compute(chunk(frames_at))
    motion = block(m, f, "motion")
    assert motion[0, 0] > 0.01
    np.testing.assert_allclose(motion[0, 1:], 0.0, atol=1e-6)
    np.testing.assert_allclose(motion[1], 0.0, atol=1e-6)
    assert block(m, f, "motion_mean")[0, 0] > 0 and block(m, f, "motion_max_pair")[0, 0] > 0
    assert block(m, f, "L_std")[0, 0] > 5 and np.all(block(m, f, "L_std")[0, 1:] < 1e-3)
    # a finer grid localises it further: only cells of the top-left quarter move
    m4 = build("motion:4")
    mo4 = block(m4, m4.compute(chunk(frames_at)), "motion")[0].reshape(4, 4)
    assert mo4[0, 0] > 0.01 and mo4[0, 1] > 0.01
    np.testing.assert_allclose(mo4[1:], 0.0, atol=1e-6)
    np.testing.assert_allclose(mo4[:, 2:], 0.0, atol=1e-6)


def test_extra_positions_ignored_missing_ones_rejected() -> None:
    c = flat((1, 2, 3))
    c.frames[0.25] = np.zeros_like(c.frames[0.5])  # another extractor's frames
    m = build("motion:2")
    np.testing.assert_array_equal(m.compute(c), m.compute(flat((1, 2, 3))))
    del c.frames[0.7]
    with pytest.raises(ValueError, match="position 0.7"):
        m.compute(c)


def test_area_matrix_is_exact_box_average() -> None:
    a = area_matrix(6, 4)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(a[0], [2 / 3, 1 / 3, 0, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(area_matrix(5, 5), np.eye(5))
