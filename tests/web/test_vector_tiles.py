"""Vector-tile helpers without servers: the area a tile reads, and which aggregates answer which
filter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amberscan.geo.tiles import Tile
from amberscan.web import vector_tiles
from amberscan.web.core import Filters


@given(
    st.integers(0, 18).flatmap(
        lambda z: st.tuples(st.just(z), st.integers(0, 2**z - 1), st.integers(0, 2**z - 1))
    )
)
def test_a_tile_reads_the_detections_within_its_own_bounds(zxy: tuple[int, int, int]) -> None:
    z, x, y = zxy
    bounds = list(Tile(x, y, z).bounds())
    query = (
        vector_tiles._detail_sql if z >= vector_tiles.DETAIL_ZOOM else vector_tiles._live_cells_sql
    )
    _, params = query(Filters(), z, x, y)
    assert params[-8:] == bounds * 2  # the bbox condition: the index test, then the exact one


@pytest.mark.parametrize(
    ("filters", "scope"),
    [
        (Filters(), ("latest", [])),
        (Filters(year="2016"), ("latest_year AND year = %s", ["2016"])),
        (Filters(model="m"), ("latest_model AND model_version = %s", ["m"])),
        (
            Filters(year="2016", model="m"),
            ("latest_year_model AND year = %s AND model_version = %s", ["2016", "m"]),
        ),
        (Filters(review="rejected"), ("latest AND review = %s", ["rejected"])),
        (
            Filters(year="2016", change="changed"),
            ("latest_year AND year = %s AND change = ANY(%s)", ["2016", ["new", "gone"]]),
        ),
        (Filters(year="2016", change="new", model="m"), None),  # one model's change: not aggregated
    ],
)
def test_cell_scope(filters: Filters, scope: tuple[str, list[object]] | None) -> None:
    assert vector_tiles.cell_scope(filters) == scope
