"""Request parsing without servers: every parameter and body field, accepted and refused."""

from __future__ import annotations

import pytest

from amberscan.web import params
from amberscan.web.core import BadRequest, Filters

DIGEST = "ab" + "0" * 62


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("26.5,50.7,26.8,50.9", (26.5, 50.7, 26.8, 50.9)),
        ("-200,-95,200,95", (-180.0, -90.0, 180.0, 90.0)),  # Leaflet's wrapped world, clamped
    ],
)
def test_parse_bbox(text: str, expected: tuple[float, ...]) -> None:
    assert params.parse_bbox(text) == expected


@pytest.mark.parametrize(
    "text", ["", "1,2,3", "1,2,3,4,5", "a,1,2,3", "1,1,1,2", "0,2,1,1", "0,0,inf,1"]
)
def test_parse_bbox_refuses(text: str) -> None:
    with pytest.raises(BadRequest, match="bbox"):
        params.parse_bbox(text)


def test_parse_filters() -> None:
    f = params.parse_filters(
        {"bbox": "0,0,1,1", "year": "2014", "model": "m-1", "limit": "3", "offset": "6"},
        bbox_required=True,
    )
    assert f == Filters((0.0, 0.0, 1.0, 1.0), "2014", "m-1", limit=3, offset=6)
    assert params.parse_filters({}, bbox_required=False) == Filters()
    view = params.parse_filters(
        {"year": "2016", "change": "new", "review": "rejected"}, bbox_required=False
    )
    assert (view.year, view.change, view.review) == ("2016", "new", "rejected")
    for bad in (
        {"year": "14"},
        {"model": "a b"},
        {"limit": "0"},
        {"limit": "x"},
        {"offset": "-1"},
        {"review": "maybe"},
        {"change": "sideways", "year": "2016"},
    ):
        with pytest.raises(BadRequest):
            params.parse_filters(bad, bbox_required=False)
    with pytest.raises(BadRequest, match="change=new needs year=YYYY"):
        params.parse_filters({"change": "new"}, bbox_required=False)
    with pytest.raises(BadRequest, match=r"at most 10 per page \(AMBERSCAN_WEB_MAX_PAGE\)"):
        params.parse_filters({"limit": "11"}, bbox_required=False, max_page=10)
    with pytest.raises(BadRequest, match="required"):
        params.parse_filters({}, bbox_required=True)


@pytest.mark.parametrize(("value", "label"), [("mining", 1), ("not_mining", 0), ("clear", None)])
def test_parse_label(value: str, label: int | None) -> None:
    assert params.label(value) == label


def test_parse_inputs_refuse() -> None:
    for fn, value in (
        (params.label, "yes"),
        (params.verdict, "maybe"),
        (params.reviewer, "<b>"),
    ):
        with pytest.raises(BadRequest):
            fn(value)
    assert params.reviewer(None) == "web"


def test_image_key_must_be_a_tile_content_key() -> None:
    assert params.image_key(f"tiles/ab/{DIGEST}.png") == f"tiles/ab/{DIGEST}.png"
    for bad in (
        "",
        f"crops/ab/{DIGEST}.png",
        f"tiles/cd/{DIGEST}.png",  # the folder is the digest's first two characters
        f"tiles/ab/{DIGEST}.png/../../models/classifier/current.json",
        "tiles/ab/../x.png",
        f"tiles/ab/{DIGEST.upper()}.png",
    ):
        with pytest.raises(BadRequest):
            params.image_key(bad)


def test_pixel_box() -> None:
    assert params.pixel_box("0,1,20,30") == (0, 1, 20, 30)
    for bad in ("", "1,2,3", "0,0,0,5", "5,0,2,9", "-1,0,2,2", "a,b,c,d", "1.5,0,2,2"):
        with pytest.raises(BadRequest):
            params.pixel_box(bad)
    params.check_box_inside((0, 0, 256, 256), 256, 256)
    with pytest.raises(BadRequest, match="outside the 256x256"):
        params.check_box_inside((0, 0, 257, 10), 256, 256)


def test_explore_source() -> None:
    assert params.explore_source({}) == ("scan", None)
    assert params.explore_source({"source": "scan", "scan_id": "s-1"}) == ("scan", "s-1")
    assert params.explore_source({"source": "labelled", "scan_id": "x"}) == ("labelled", None)
    for bad in ({"source": "elsewhere"}, {"scan_id": "no such scan!"}):
        with pytest.raises(BadRequest):
            params.explore_source(bad)


def test_tile_coords_are_checked() -> None:
    from aiohttp.test_utils import make_mocked_request

    def request(z: str, x: str, y: str) -> object:
        r = make_mocked_request("GET", f"/tiles/detections/{z}/{x}/{y}.mvt")
        r.match_info.update({"z": z, "x": x, "y": y})  # type: ignore[attr-defined]
        return r

    assert params.tile_coords(request("3", "7", "0")) == (3, 7, 0)  # type: ignore[arg-type]
    for bad, words in (
        (("3", "8", "0"), "from 0 to 7"),
        (("23", "0", "0"), "zoom"),
        (("a", "0", "0"), "integers"),
    ):
        with pytest.raises(BadRequest, match=words):
            params.tile_coords(request(*bad))  # type: ignore[arg-type]
