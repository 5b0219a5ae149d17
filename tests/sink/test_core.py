from amberscan.sink.core import detection_row, done_row, failed_row
from amberscan.v1 import messages_pb2 as pb


def test_rows_carry_the_key_and_the_verdict() -> None:
    detection = pb.Detection(
        tile_id="q",
        scan_id="s",
        imagery_date="2015-10-05",
        flagged=False,
        hectares=0.7,
        models=pb.ModelVersions(classifier="m", backbone="b"),
        tile_geojson="{}",
        scores=[0.5],
    )
    row = detection_row(detection)
    assert (row["tile_id"], row["imagery_date"], row["model_version"]) == ("q", "2015-10-05", "m")
    assert row["scores"] == [0.5]
    done = done_row(detection)
    assert done["status"] == "done" and done["hectares"] == 0.0  # only flagged tiles count area


def test_dead_letter_rows() -> None:
    letter = pb.DeadLetter(reason="PNG truncated", service="segmenter", tile_id="q", scan_id="s")
    row = failed_row(letter)
    assert row is not None and row["status"] == "failed" and "PNG truncated" in row["reason"]
    assert failed_row(pb.DeadLetter(reason="x", tile_id="q")) is None  # no scan to report to
    scan_level = failed_row(pb.DeadLetter(reason="invalid region", scan_id="s"))
    assert scan_level is not None and scan_level["tile_id"] == ""
