import pickle
import sys

import numpy as np
import pytest

from engine.run.blending import StripAccumulator, decide_classes
from engine.run.tiling import WINDOW_FLOOR, Tile, TilePlan, axis_starts, blend_window, plan_tiles


@pytest.mark.parametrize(
    ("length", "tile", "stride", "expected"),
    [
        (100, 128, 96, [0]),
        (128, 128, 96, [0]),
        (200, 128, 96, [0, 72]),
        (224, 128, 96, [0, 96]),
        (1000, 512, 341, [0, 341, 488]),
    ],
)
def test_axis_starts_cover_length_with_last_tile_flush(length, tile, stride, expected):
    starts = axis_starts(length, tile, stride)
    assert starts == expected
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()


def test_plan_is_row_major_and_complete():
    tiles = plan_tiles(300, 500, 128, 100)
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert [(t.row, t.col) for t in tiles] == sorted((t.row, t.col) for t in tiles)
    assert {t.row for t in tiles} == {0, 100, 172}
    assert {t.col for t in tiles} == {0, 100, 200, 300, 372}


def test_plan_indexes_slices_and_pickles_like_the_list_it_stands_for():
    plan = plan_tiles(300, 500, 128, 100)
    tiles = list(plan)
    assert len(plan) == len(tiles) == 15
    assert [plan[i] for i in range(len(plan))] == tiles
    assert plan[-1] == tiles[-1] == Tile(14, 172, 372)
    assert plan[3:11:2] == tiles[3:11:2]
    with pytest.raises(IndexError):
        plan[15]
    assert pickle.loads(pickle.dumps(plan)) == plan


@pytest.mark.parametrize(("first", "end"), [(0, 100), (100, 172), (150, 300), (299, 300), (0, 300)])
def test_plan_part_touching_rows_keeps_whole_plan_indices(first, end):
    size = 128
    plan = plan_tiles(300, 500, size, 100)
    part = plan.touching_rows(first, end, size)
    assert list(part) == [t for t in plan if t.row < end and t.row + size > first]
    assert part.row_starts == tuple(sorted({t.row for t in part}))


def test_plan_of_a_continental_mosaic_stays_small():
    # 400,000 px square at 512/384 px: a million tiles, held as two lists of starts
    plan = plan_tiles(400_000, 400_000, 512, 384)
    assert len(plan) == 1042**2
    assert plan[-1] == Tile(1042**2 - 1, 400_000 - 512, 400_000 - 512)
    held = sys.getsizeof(plan.row_starts) + sys.getsizeof(plan.col_starts)
    assert held < 20_000
    assert len(pickle.dumps(plan)) < 20_000
    assert plan.touching_rows(0, 512, 512) == TilePlan(plan.row_starts[:2], plan.col_starts)


def test_blend_window_is_smooth_symmetric_and_floored():
    w = blend_window(64)
    assert w.shape == (64, 64)
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w.min() >= WINDOW_FLOOR**2 - 1e-12
    assert w.max() == pytest.approx(1.0, abs=2e-3)
    # smooth: neighbouring weights differ by little compared with the peak
    assert np.abs(np.diff(w, axis=0)).max() < 0.06


def copied(top, scores, weights, valid):
    return top, scores.copy(), weights.copy(), valid.copy()


def test_strip_releases_rows_in_order_and_shifts():
    acc = StripAccumulator(num_classes=2, capacity=4, width=3)
    ones = np.ones((2, 4, 3), np.float32)
    valid = np.ones((4, 3), bool)
    valid[1, 2] = False  # a nodata pixel in the first tile
    acc.add(
        ones * np.array([1, 2], np.float32)[:, None, None], np.ones((4, 3), np.float32), 0, 0, valid
    )
    top, scores, weights, source_valid = acc.release_with(2, copied)
    assert top == 0 and scores.shape == (2, 2, 3)
    np.testing.assert_array_equal(weights, 1.0)
    assert not source_valid[1, 2] and source_valid.sum() == 5
    second = np.ones((4, 3), bool)
    second[3] = False  # the tile's last row is nodata
    acc.add(
        ones * np.array([3, 0], np.float32)[:, None, None],
        np.ones((4, 3), np.float32),
        2,
        0,
        second,
    )
    top, scores, weights, source_valid = acc.release_with(6, copied)
    assert top == 2 and scores.shape == (2, 4, 3)
    # rows 2-3 saw both tiles, rows 4-5 only the second
    np.testing.assert_array_equal(weights[:, 0], [2, 2, 1, 1])
    # validity shifted with the strip: rows 2-3 valid (first tile), row 5 nodata (second)
    np.testing.assert_array_equal(source_valid[:, 0], [True, True, True, False])
    classes, confidence, covered = decide_classes(scores, weights)
    np.testing.assert_array_equal(classes[:, 0], [0, 0, 0, 0])
    np.testing.assert_allclose(confidence[:, 0], [4 / 6, 4 / 6, 1.0, 1.0])
    assert covered.all()
    without, none, _ = decide_classes(scores, weights, with_confidence=False)
    np.testing.assert_array_equal(without, classes)
    assert none is None
    with pytest.raises(ValueError):
        acc.add(ones, np.ones((4, 3), np.float32), 0, 0, valid)


def test_strip_hands_views_to_the_consumer_then_shifts():
    acc = StripAccumulator(num_classes=2, capacity=4, width=3)
    scores = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    acc.add(scores, np.ones((4, 3), np.float32), 0, 0, np.ones((4, 3), bool))
    seen = []

    def consume(top, sums, weights, valid):
        # no copy: the rows are the strip's own, decided before they shift out
        assert not sums.flags.owndata and not weights.flags.owndata
        seen.append((top, sums.copy()))
        return "decided"

    assert acc.release_with(0, consume) is None and not seen  # nothing finished yet
    assert acc.release_with(3, consume) == "decided"
    assert seen[0][0] == 0
    np.testing.assert_array_equal(seen[0][1], scores[:, :3])
    # the last row moved to the top, the rest of the strip is empty again
    top, sums, weights, _ = acc.release_with(4, copied)
    assert top == 3
    np.testing.assert_array_equal(sums, scores[:, 3:])
    assert acc.top == 4
    rest = acc.release_with(8, copied)
    assert rest[0] == 4 and not rest[1].any() and not rest[2].any()


def test_decide_classes_matches_argmax_breaks_ties_to_the_first_and_widens_past_256():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, (7, 20, 30)).astype(np.float32)  # many ties
    classes, confidence, _ = decide_classes(scores, np.ones((20, 30), np.float32))
    np.testing.assert_array_equal(classes, np.argmax(scores, axis=0))
    assert classes.dtype == np.uint8
    total = scores.sum(axis=0)
    expected = np.where(total > 0, scores.max(axis=0) / np.where(total > 0, total, 1), 0)
    np.testing.assert_allclose(confidence, expected, rtol=1e-6)
    many = rng.random((300, 4, 5), dtype=np.float32)
    wide, _, _ = decide_classes(many, np.ones((4, 5), np.float32), with_confidence=False)
    assert wide.dtype == np.uint16
    np.testing.assert_array_equal(wide, np.argmax(many, axis=0))
