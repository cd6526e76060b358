"""Reconstruction masks: training spans honour ratio and span, scoring passes hide every point exactly once."""

from __future__ import annotations

import pytest
import torch

from tsmoe.model.masking import scoring_masks, scoring_passes, span_mask, training_generator


def _runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-d bool tensor."""
    lengths, current = [], 0
    for hidden in [*row.tolist(), False]:
        if hidden:
            current += 1
        elif current:
            lengths.append(current)
            current = 0
    return lengths


def test_training_masks_hide_the_ratio_in_whole_spans():
    mask = span_mask(50, 64, ratio=0.25, span=4, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (50, 64)
    # round(0.25 * 64 / 4) = 4 spans of 4 points in every series, never overlapping.
    assert mask.sum(dim=1).tolist() == [16] * 50
    for row in mask:
        assert all(length % 4 == 0 for length in _runs(row))
    # Spans land everywhere, first and last point included.
    assert mask.any(dim=0).all()


def test_training_masks_keep_a_point_visible_at_a_high_ratio():
    mask = span_mask(20, 10, ratio=0.95, span=3, generator=torch.Generator().manual_seed(1))
    # round(0.95 * 10 / 3) = 3 spans fill 9 points: at most (10 - 1) // 3 = 3, so one point stays visible.
    assert mask.sum(dim=1).tolist() == [9] * 20


def test_a_series_too_short_for_a_span_is_refused():
    with pytest.raises(ValueError, match="span of 8"):
        span_mask(1, 8, ratio=0.5, span=8, generator=torch.Generator())


def test_training_masks_repeat_for_the_same_step_and_differ_between_ranks():
    def mask(rank, step, micro):
        return span_mask(4, 64, 0.25, 4, training_generator(seed=0, rank=rank, step=step, micro_batch=micro))

    assert torch.equal(mask(0, 3, 0), mask(0, 3, 0))
    assert not torch.equal(mask(0, 3, 0), mask(1, 3, 0))
    assert not torch.equal(mask(0, 3, 0), mask(0, 4, 0))
    assert not torch.equal(mask(0, 3, 0), mask(0, 3, 1))


def test_scoring_passes_hide_every_point_exactly_once():
    masks = scoring_masks(length=10, span=2, passes=3)
    assert masks.int().tolist() == [
        [1, 1, 0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 1, 1, 0, 0, 0, 0],
    ]
    assert torch.equal(scoring_masks(257, 8, 4).sum(dim=0), torch.ones(257, dtype=torch.long))


@pytest.mark.parametrize("ratio, passes", [(0.25, 4), (0.3, 4), (0.5, 2), (0.15, 7)])
def test_scoring_uses_ceil_of_one_over_the_ratio_passes(ratio, passes):
    assert scoring_passes(ratio) == passes
