"""The stratified area estimator (issue 28) against Olofsson et al. (2014)'s worked example.

Section 5 of the paper ("Good practices for estimating area and assessing accuracy of land
change", RSE 148, 42-57): four map classes over 10,000,000 Landsat pixels of 30 m (0.09 ha),
a stratified random sample of 640 pixels with the map classes as strata, its error matrix in
sample counts (table 8) and the results on p. 54. The numbers are the paper's, as the open
implementations (R `mapaccuracy`, Python `accuracyAssessmentTools`) test them; two of the
paper's printed interval widths (forest gain's and stable non-forest's producer's accuracy) do
not follow from its own eq. 7 (those implementations note the same), so those two are checked
against eq. 7 computed here instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amberscan.errors import InvalidInput
from amberscan.model.area import (
    Z95,
    Observation,
    Stratum,
    allocate,
    change_stratum,
    estimate,
    new_damage,
    plan,
    proportion_stdev,
    sample_size,
)

CLASSES = ("deforestation", "forest gain", "stable forest", "stable non-forest")
PIXELS = (200_000, 150_000, 3_200_000, 6_450_000)
# Table 8: rows the map class (the stratum), columns the reference class, sample counts.
COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
HA_PER_PIXEL = 0.09
# p. 54: user's and producer's accuracy with the half-width of the 95 % interval, and the
# area in hectares with its half-width.
USERS = ((0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02))
PRODUCERS = ((0.75, 0.21), (0.85, None), (0.93, 0.03), (0.96, None))
AREA_HA = ((21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282))
STRATA = [Stratum(name, size) for name, size in zip(CLASSES, PIXELS, strict=True)]


def observations(target: int) -> list[Observation]:
    """Table 8's 640 pixels as observations of one target class (binary: the pixel is it)."""
    return [
        Observation(CLASSES[i], mapped=i == target, reference=float(j == target))
        for i in range(4)
        for j in range(4)
        for _ in range(int(COUNTS[i, j]))
    ]


def equation_7_half_width(j: int) -> float:
    """The producer's accuracy's 95 % half-width by the paper's eq. 7, computed from table 8."""
    n = COUNTS.sum(axis=1).astype(float)
    weights = np.asarray(PIXELS, float) / sum(PIXELS)
    p = weights[:, None] * COUNTS / n[:, None]
    users, producers = np.diag(p) / p.sum(1), np.diag(p) / p.sum(0)
    mapped_j = float((np.asarray(PIXELS)[:, None] * COUNTS / n[:, None]).sum(0)[j])
    own = PIXELS[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (n[j] - 1)
    others = sum(
        PIXELS[i] ** 2 * COUNTS[i, j] / n[i] * (1 - COUNTS[i, j] / n[i]) / (n[i] - 1)
        for i in range(4)
        if i != j
    )
    return Z95 * math.sqrt((own + producers[j] ** 2 * others) / mapped_j**2)


@pytest.mark.parametrize("k", range(4), ids=CLASSES)
def test_reproduces_olofsson_2014_worked_example(k: int) -> None:
    result = estimate(STRATA, observations(k), fpc=False)
    assert result.area is not None and result.area.se is not None
    area, half = AREA_HA[k]
    assert result.area.estimate * HA_PER_PIXEL == pytest.approx(area, abs=1)
    assert Z95 * result.area.se * HA_PER_PIXEL == pytest.approx(half, abs=1.5)
    users, producers = result.users, result.producers
    assert users is not None and users.se is not None
    assert producers is not None and producers.se is not None
    assert users.estimate == pytest.approx(USERS[k][0], abs=0.005)
    assert Z95 * users.se == pytest.approx(USERS[k][1], abs=0.005)
    assert producers.estimate == pytest.approx(PRODUCERS[k][0], abs=0.005)
    printed = PRODUCERS[k][1]
    if printed is not None:
        assert Z95 * producers.se == pytest.approx(printed, abs=0.005)
    assert Z95 * producers.se == pytest.approx(equation_7_half_width(k), rel=1e-3)
    # The paper's deforestation in pixels: 235,086 +- 68,418.
    if k == 0:
        assert result.area.estimate == pytest.approx(235_086, abs=1)
        assert Z95 * result.area.se == pytest.approx(68_418, abs=5)


def test_reproduces_the_papers_overall_accuracy_and_error_matrix() -> None:
    """Overall accuracy 0.95 +- 0.02 (the agreement of all four classes), and table 9's
    estimated area proportions, as the share of the map agreeing / of each reference class."""
    agree = [
        Observation(CLASSES[i], mapped=True, reference=float(i == j))
        for i in range(4)
        for j in range(4)
        for _ in range(int(COUNTS[i, j]))
    ]
    overall = estimate(STRATA, agree, fpc=False).proportion
    assert overall is not None and overall.se is not None
    assert overall.estimate == pytest.approx(0.95, abs=0.005)
    assert Z95 * overall.se == pytest.approx(0.02, abs=0.005)
    table_9_column_sums = (0.0235, 0.0130, 0.3176, 0.6460)
    for k, expected in enumerate(table_9_column_sums):
        proportion = estimate(STRATA, observations(k), fpc=False).proportion
        assert proportion is not None
        assert proportion.estimate == pytest.approx(expected, abs=0.0002)


def test_sample_size_and_allocation_of_the_paper() -> None:
    """Section 5.1: anticipated user's accuracies 0.7, 0.6, 0.9, 0.95 and a target standard
    error of 0.01 for overall accuracy give n = 641 (eq. 13); proportional allocation of it is
    13, 10, 205, 413."""
    weights = [p / sum(PIXELS) for p in PIXELS]
    stdevs = [proportion_stdev(u) for u in (0.7, 0.6, 0.9, 0.95)]
    assert sample_size(weights, stdevs, 0.01) == 641
    assert allocate(641, weights) == [13, 10, 205, 413]
    # The finite population shrinks it (slightly, at 10 million pixels; a lot at 300 tiles).
    assert sample_size(weights, stdevs, 0.01, PIXELS) == 641
    assert sample_size(weights, stdevs, 0.01, [6, 5, 96, 193]) < 300
    floored = allocate(641, weights, stdevs, minimum=75)
    assert sum(floored) == 641 and min(floored) >= 75
    assert floored[3] > floored[2]  # the rest by Neyman: W_h S_h
    assert allocate(100, [0.5, 0.5], minimum=10, sizes=[3, 1000]) == [3, 97]
    assert allocate(100, [0.5, 0.5], sizes=[3, 4]) == [3, 4]  # fewer units than asked
    with pytest.raises(InvalidInput, match="positive"):
        sample_size(weights, stdevs, 0)


def test_area_weighted_observations_and_a_census() -> None:
    """A reference amount may be a fraction of a unit (the superpixels marked mining in a
    tile): the total is the stratified mean times N_h; a stratum sampled whole has no
    variance; the map's user's accuracy is the share of the mapped area that is mining."""
    strata = [Stratum("flagged", 4, area=4.0), Stratum("rest", 100, area=100.0)]
    obs = [Observation("flagged", True, f) for f in (0.5, 1.0, 0.0, 0.5)]
    obs += [Observation("rest", False, f) for f in (0.0, 0.1, 0.0, 0.0, 0.3)]
    result = estimate(strata, obs)
    assert result.area is not None and result.area.se is not None
    assert result.area.estimate == pytest.approx(2.0 + 100 * 0.08)
    rest = np.array([0.0, 0.1, 0.0, 0.0, 0.3])
    expected_se = math.sqrt(100**2 * (1 - 5 / 100) * rest.var(ddof=1) / 5)
    assert result.area.se == pytest.approx(expected_se)
    assert result.users is not None and result.users.estimate == pytest.approx(0.5)
    assert result.users.se == pytest.approx(0.0)  # the flagged stratum is a census
    assert result.producers is not None
    assert result.producers.estimate == pytest.approx(2.0 / 10.0)
    assert result.proportion is not None
    assert result.proportion.estimate == pytest.approx(10.0 / 104)


def test_not_yet_estimable_and_bad_input() -> None:
    strata = [Stratum("a", 10), Stratum("b", 10)]
    assert estimate(strata, [Observation("a", True, 1.0)]).area is None  # b unobserved
    one_each = estimate(strata, [Observation("a", True, 1.0), Observation("b", False, 0.0)])
    assert one_each.area is not None and one_each.area.se is None and one_each.area.low is None
    with pytest.raises(InvalidInput, match="'c'"):
        estimate(strata, [Observation("c", True, 1.0)])
    with pytest.raises(InvalidInput, match="outside"):
        estimate(strata, [Observation("a", True, 2.0)])
    with pytest.raises(InvalidInput, match="3 observations of 2"):
        estimate([Stratum("a", 2)], [Observation("a", True, 1.0)] * 3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 1), st.floats(0, 1)), min_size=6, max_size=40
    ),
    st.integers(0, 2**31),
)
def test_reporting_units_add_up_to_the_region(
    rows: list[tuple[int, int, float]], seed: int
) -> None:
    """A reporting unit's estimate is the region's with the units outside it zeroed (domain
    estimation): the units that partition the region add up to the region's area estimate."""
    strata = [Stratum(f"s{h}", 50) for h in range(3)]
    if {h for h, _, _ in rows} != {0, 1, 2}:
        return
    inside = np.random.default_rng(seed).integers(0, 2, len(rows)).astype(bool)
    full = [Observation(f"s{h}", bool(m), r) for h, m, r in rows]

    def part(keep: bool) -> list[Observation]:
        return [
            o if flag == keep else Observation(o.stratum, o.mapped, 0.0, 0.0)
            for o, flag in zip(full, inside, strict=True)
        ]

    whole, a, b = (estimate(strata, obs).area for obs in (full, part(True), part(False)))
    assert whole is not None and a is not None and b is not None
    assert a.estimate + b.estimate == pytest.approx(whole.estimate, abs=1e-9)


def test_plan_from_a_target_standard_error_or_a_size() -> None:
    """A design's sizes: eq. 13 with the finite population for a target SE of the area share,
    allocated with the floor; or a given n; never both, never neither."""
    strata = [
        Stratum("flagged", 300, 300.0),
        Stratum("high", 2000, 2000.0),
        Stratum("rest", 17700, 17700.0),
    ]
    anticipated = [0.7, 0.15, 0.005]
    weights = [s.total_area / 20_000 for s in strata]
    stdevs = [proportion_stdev(p) for p in anticipated]
    sizes = plan(strata, anticipated, target_se=0.002, minimum=30)
    assert sum(sizes) == sample_size(weights, stdevs, 0.002, [300, 2000, 17700])
    assert min(sizes) >= 30 and sizes == allocate(
        sum(sizes), weights, stdevs, minimum=30, sizes=[300, 2000, 17700]
    )
    tighter = plan(strata, anticipated, target_se=0.001, minimum=30)
    assert sum(tighter) > sum(sizes)
    assert plan(strata, anticipated, n=90, minimum=30) == [30, 30, 30]
    with pytest.raises(InvalidInput, match="not both"):
        plan(strata, anticipated, n=90, target_se=0.01)
    with pytest.raises(InvalidInput, match="not both"):
        plan(strata, anticipated)
    with pytest.raises(InvalidInput, match="2 anticipated"):
        plan(strata, anticipated[:2], n=10)


@pytest.mark.parametrize(
    ("before", "after", "stratum"),
    [
        (False, True, "new"),
        (True, True, "both"),
        (False, False, "neither"),
        (True, False, "neither"),
    ],
)
def test_change_strata_from_the_two_verdicts(before: bool, after: bool, stratum: str) -> None:
    assert change_stratum(before, after) == stratum


@pytest.mark.parametrize(
    ("later", "earlier", "new"),
    [
        (None, None, None),  # the later date not judged yet
        (None, False, None),
        (0.0, None, 0.0),  # no damage at the later date: nothing new, whatever came before
        (0.0, True, 0.0),
        (2.5, None, None),  # damage at the later date: new only if absent before, not judged yet
        (2.5, False, 2.5),
        (2.5, True, 0.0),  # there already: not new
    ],
)
def test_new_damage_of_a_unit(later: float | None, earlier: bool | None, new: float | None) -> None:
    assert new_damage(later, earlier) == new


def test_new_damage_between_two_vintages_by_hand() -> None:
    """A change design's estimate, computed by hand: 100 units of 1 ha on the change map's
    strata, new (10), both (20), neither (70), four judged in each.

    new: new damage in 3 of 4 (mean 0.75, s2 = 0.25); both: in 1 of 4 (0.25, s2 = 0.25);
    neither: none (0, s2 = 0). T = 10 * 0.75 + 20 * 0.25 = 12.5 ha; V(T) = 10^2 * (1 - 0.4) *
    0.25 / 4 + 20^2 * (1 - 0.2) * 0.25 / 4 = 3.75 + 20 = 23.75. User's accuracy (of the map's
    new damage) 7.5 / 10 = 0.75, V = 10^2 * 0.6 * 0.25 / 4 / 10^2 = 0.0375. Producer's 7.5 /
    12.5 = 0.6: in `new` y = x, s2 (1 + R^2 - 2R) = 0.25 * 0.16 = 0.04, 100 * 0.6 * 0.04 / 4 =
    0.6; in `both` y = 0, R^2 s2_x = 0.09, 400 * 0.8 * 0.09 / 4 = 7.2; V = 7.8 / 12.5^2."""
    strata = [Stratum("new", 10, 10.0), Stratum("both", 20, 20.0), Stratum("neither", 70, 70.0)]
    judged = {
        # stratum: (flagged before, flagged after), [(later reference, mining before)]
        "new": ((False, True), [(1.0, False), (1.0, False), (1.0, False), (0.0, None)]),
        "both": ((True, True), [(1.0, True), (1.0, True), (0.0, None), (1.0, False)]),
        "neither": ((False, False), [(0.0, None), (1.0, True), (0.0, False), (0.0, None)]),
    }
    observations = []
    for name, ((before, after), units) in judged.items():
        assert change_stratum(before, after) == name
        for later, earlier in units:
            amount = new_damage(later, earlier)
            assert amount is not None
            observations.append(Observation(name, name == "new", amount, 1.0))
    result = estimate(strata, observations)
    assert result.area is not None and result.area.se is not None
    assert result.area.estimate == pytest.approx(12.5)
    assert result.area.se == pytest.approx(math.sqrt(23.75))
    assert result.area.low == pytest.approx(12.5 - Z95 * math.sqrt(23.75))
    assert result.proportion is not None and result.proportion.estimate == pytest.approx(0.125)
    assert result.users is not None and result.users.se is not None
    assert result.users.estimate == pytest.approx(0.75)
    assert result.users.se == pytest.approx(math.sqrt(0.0375))
    assert result.producers is not None and result.producers.se is not None
    assert result.producers.estimate == pytest.approx(0.6)
    assert result.producers.se == pytest.approx(math.sqrt(7.8) / 12.5)
