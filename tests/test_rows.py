"""featpipe.decode.rows: the plan that decides which computed row each stored row holds."""

import numpy as np

from featpipe.decode.rows import fill_plan, invalid_runs, take_rows, valid_end


def test_prefix_mask_repeat_is_musicavqa_padding():
    prefix = np.arange(6) < 3  # a stream that decoded its first 3 rows and nothing after
    take = fill_plan(prefix, available=5, pad="repeat")
    assert take.tolist() == [0, 1, 2, 2, 2, 2]
    assert fill_plan(prefix, 5, "zero").tolist() == [0, 1, 2, -1, -1, -1]


def test_late_start_and_hole_hold_decoded_rows_only():
    mask = np.array([0, 0, 1, 1, 0, 1, 0], bool)
    assert fill_plan(mask, 7, "repeat").tolist() == [2, 2, 2, 3, 3, 5, 5]
    assert fill_plan(mask, 7, "zero").tolist() == [-1, -1, 2, 3, -1, 5, -1]
    assert valid_end(mask) == 6 and invalid_runs(mask) == [[0, 2], [4, 5]]
    assert fill_plan(np.zeros(3, bool), 3, "repeat").tolist() == [-1, -1, -1]


def test_rows_not_computed_are_never_their_own():
    assert fill_plan(np.ones(4, bool), available=2, pad="repeat").tolist() == [0, 1, 1, 1]


def test_take_rows_copies_and_zero_fills():
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = take_rows(arr, np.array([1, -1, 3]))
    assert out.tolist() == [[3, 4, 5], [0, 0, 0], [9, 10, 11]]
