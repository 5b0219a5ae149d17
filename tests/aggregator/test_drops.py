"""Aggregator core: no tile is dropped silently, an outage makes nothing stale, and scores of a
tile already finished or dropped hold nothing back (#10, defect 1). No servers."""

from hypothesis import given, settings
from hypothesis import strategies as st

from amberscan.aggregator.core import ACTIVE_GAP_S, Added, TileJoin, tile_key
from tests.aggregator.test_core import TILE, scores_for


def test_a_tile_missing_a_score_is_dropped_once_its_partition_streamed_past_it() -> None:
    join = TileJoin(min_positives=2, max_open=100, stale_s=10)
    lost = scores_for([0.9, 0.9, 0.9], scan="lost")
    join.add(lost[0], 3, 40, now=0.0)
    join.add(lost[1], 3, 41, now=0.0)  # its third score was dead-lettered upstream
    dropped = []
    for k in range(30):  # other tiles keep streaming on the same partition, one a second
        for i, score in enumerate(scores_for([0.1, 0.1], scan=f"other{k}")):
            dropped += join.add(score, 3, 42 + 2 * k + i, now=1.0 + k).dropped
    [drop] = dropped
    assert (drop.tile_id, drop.scan_id, drop.cause) == (TILE.quadkey, "lost", "stale")
    assert (drop.partition, drop.offset, drop.received, drop.expected) == (3, 40, 2, 3)
    assert "2 of 3" in drop.reason and "STALE_S" in drop.reason
    assert not join.open and join.safe_offset(3, 200) == 200


@settings(deadline=None)
@given(st.floats(min_value=60, max_value=1e6))
def test_a_pause_of_the_whole_stream_makes_nothing_stale(outage_s: float) -> None:
    """A model-server outage stops every score; when they resume the held-up tile completes."""
    join = TileJoin(min_positives=2, max_open=100, stale_s=10)
    held = scores_for([0.9, 0.9, 0.9], scan="held")
    join.add(held[0], 0, 1, now=0.0)
    join.add(held[1], 0, 2, now=1.0)
    after = 1.0 + outage_s
    # Another tile's score may arrive first when the stream resumes.
    other = join.add(scores_for([0.1, 0.1], scan="other")[0], 0, 3, now=after)
    assert not other.dropped
    done = join.add(held[2], 0, 4, now=after + ACTIVE_GAP_S)
    assert done.detection is not None and not done.dropped


def test_silence_on_one_partition_does_not_count_while_another_streams() -> None:
    join = TileJoin(min_positives=2, max_open=100, stale_s=10)
    held = scores_for([0.9, 0.9], scan="held")
    join.add(held[0], 0, 1, now=0.0)
    for k in range(60):  # partition 1 streams for a minute; partition 0 is waiting upstream
        assert not join.add(scores_for([0.1], scan=f"o{k}")[0], 1, k, now=float(k)).dropped
    assert join.add(held[1], 0, 2, now=60.0).detection is not None


def test_late_scores_of_a_dropped_tile_are_ignored() -> None:
    join = TileJoin(min_positives=2, max_open=1, stale_s=10)
    a = scores_for([0.9, 0.9], scan="a")
    b = scores_for([0.9, 0.9], scan="b")
    join.add(a[0], 0, 1, now=0.0)
    assert [d.scan_id for d in join.add(b[0], 0, 2, now=1.0).dropped] == ["a"]
    join.acknowledged(0, 3)  # the dead letter went out with record 2
    late = join.add(a[1], 0, 3, now=2.0)
    assert late.ignored == "dropped" and late.detection is None
    assert set(join.open) == {(TILE.quadkey, "b", "m1", "2015-10-05")}  # the late one opened none
    assert join.safe_offset(0, 4) == 2


def test_a_redelivered_part_of_a_finished_tile_holds_no_commit_back() -> None:
    join = TileJoin(min_positives=2, max_open=10, stale_s=900)
    a = scores_for([0.9, 0.9, 0.1], scan="a")
    for k, score in enumerate(a):
        join.add(score, 0, k, now=0.0)
    join.acknowledged(0, 3)
    again = join.add(a[0], 0, 3, now=1.0)  # the classifier redelivered part of tile a
    assert again.ignored == "finished" and again.detection is None
    assert not join.open and join.safe_offset(0, 4) == 4


def test_revoked_partitions_are_forgotten_not_failed() -> None:
    join = TileJoin(min_positives=2, max_open=10, stale_s=10)
    join.add(scores_for([0.9, 0.9], scan="a")[0], 2, 7, now=0.0)
    join.drop_partitions({2})
    assert not join.open and join.dropped == 0


def test_a_failed_publish_joins_again_from_the_last_commit() -> None:
    """A failed publish (#26, defect 1): the runner forgets the partition and reads it again
    from its last commit, so the tile completed and the tile dropped in the failed batch are
    made again, from all their scores, not from the failed batch's alone."""
    join = TileJoin(min_positives=2, max_open=2, stale_s=900)
    a = scores_for([0.9, 0.9, 0.9], scan="a")
    b = scores_for([0.9, 0.9], scan="b")  # b[1] was lost upstream
    c = scores_for([0.9, 0.9], scan="c")
    stream = [b[0], a[0], a[1], c[0], a[2]]

    def read(start: int, end: int = len(stream)) -> list[Added]:
        return [join.add(stream[o], 0, o, now=0.0) for o in range(start, end)]

    read(0, 3)
    assert join.safe_offset(0, 3) == 0  # the commit after the batch of offsets 0-2: B's first
    failed = read(3)
    assert [d.scan_id for d in failed[0].dropped] == ["b"] and failed[1].detection is not None
    assert join.add(a[0], 0, 5, now=0.0).ignored == "finished"  # a duplicate, not yet acked
    # The batch of offsets 3-5 was not acknowledged: forgotten, read again from the commit.
    join.drop_partitions({0})
    again = read(0)
    assert [d.scan_id for d in again[3].dropped] == ["b"]
    detection = again[4].detection
    assert detection is not None and len(detection.scores) == 3
    join.acknowledged(0, 5)
    assert join.add(a[0], 0, 5, now=1.0).ignored == "finished"
    assert join.add(b[1], 0, 6, now=1.0).ignored == "dropped"
    assert set(join.open) == {tile_key(c[0])} and join.safe_offset(0, 7) == 3  # C still open
    # A revoke forgets what was not acknowledged: the new owner makes it.
    c = scores_for([0.9, 0.9], scan="c")
    join.add(c[0], 1, 0, now=0.0)
    join.add(c[1], 1, 1, now=0.0)
    join.drop_partitions({1})
    join.add(c[0], 1, 0, now=1.0)
    assert join.add(c[1], 1, 1, now=1.0).detection is not None
