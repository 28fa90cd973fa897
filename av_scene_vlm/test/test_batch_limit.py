"""core.batch_limit: halved after a failure, grown back after clean batches, within 1..maximum."""

from __future__ import annotations

import pytest
from av_scene_vlm.core.batch_limit import BatchLimit


def test_halves_on_failure_and_grows_back() -> None:
    limit = BatchLimit(recover_after=3)
    assert limit.size(8) == 8 and not limit.reduced
    limit.failed(8)
    assert limit.size(8) == 4 and limit.reduced
    limit.failed(4)
    limit.failed(2)
    limit.failed(1)
    assert limit.size(8) == 1 and limit.failures == 4  # never below one frame
    sizes = []
    for _ in range(12):
        limit.succeeded(8)
        sizes.append(limit.size(8))
    assert sizes == [1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 8]
    assert not limit.reduced


def test_a_failed_single_frame_holds_nothing() -> None:
    limit = BatchLimit()
    limit.failed(1)  # one camera, or batches already at one frame: nothing to halve
    assert limit.size(8) == 8 and not limit.reduced and limit.failures == 1


def test_a_failure_restarts_the_clean_run() -> None:
    limit = BatchLimit(recover_after=2)
    limit.failed(8)
    limit.succeeded(8)
    limit.failed(4)  # the clean run starts again from here
    limit.succeeded(8)
    assert limit.size(8) == 2
    limit.succeeded(8)
    assert limit.size(8) == 4


def test_maximum_lowered_meanwhile_and_bad_settings() -> None:
    limit = BatchLimit(recover_after=1)
    limit.failed(16)
    assert limit.size(4) == 4  # the configured maximum still caps it
    with pytest.raises(ValueError):
        BatchLimit(recover_after=0)
