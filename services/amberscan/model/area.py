"""Sample-based area estimates and map accuracy from a stratified random sample (issue 28).

Olofsson et al. (2014), "Good practices for estimating area and assessing accuracy of land
change", Remote Sensing of Environment 148, 42-57, with the estimators written, as Stehman (2014,
IJRS 35, 4923-4939) writes them, as stratified means and ratios of per-unit values, so the strata
need not be the map's classes (amberscan's strata: flagged tiles, unflagged tiles with a high
score, the rest, and the user's own) and a reference observation may be a fraction of a unit.

A population unit (a tile, a pixel) `u` in stratum `h` of `N_h` units has its area `a_u`, the
map's class `m_u` (1: mapped as the target class, e.g. a flagged tile) and a reference amount
`r_u` of the target class, `0 <= r_u <= a_u`: a binary observation is `r_u = a_u` (mining) or 0;
an area-weighted one is the area of the superpixels a reviewer marks as mining. With `n_h`
sampled units of stratum `h`, mean `ybar_h` and sample variance `s2_h` of a per-unit value `y`:

- total (eq. 9-10's area, Cochran 5A): `T = sum_h N_h ybar_h`, `V(T) = sum_h N_h^2 (1 - f_h)
  s2_h / n_h` with `f_h = n_h / N_h` (the finite population correction; Olofsson omit it, which
  is the `fpc=False` case; with the map classes as strata and binary `y` this is eq. 10);
- the target's area: `y = r`; its proportion of the area: that total over the region's area;
- ratios (Stehman 2014 eq. 27-28) `R = T_y / T_x`, `V(R) = T_x^-2 sum_h N_h^2 (1 - f_h)
  (s2_yh + R^2 s2_xh - 2 R s_xyh) / n_h`:
  user's accuracy `y = m r`, `x = m a` (the share of the mapped area that is mining);
  producer's accuracy `y = m r`, `x = r` (the share of the mining area the map finds);
  overall accuracy `y = m r + (1 - m)(a - r)`, `x = a`.
  With binary observations on units of one area and strata equal to the map classes these are
  Olofsson's eq. 2-7 (the pure test reproduces the paper's worked example, section 5).

Intervals are Wald intervals `estimate +- 1.96 SE`, not clipped (a lower bound below 0 says the
sample cannot bound the class away from zero). A stratum needs one observation for an estimate
and two for its variance (unless it is a census); until then the SE is None.

New damage between two vintages is estimated the same way on the change map's strata
(`change_stratum`: flagged at the later date only, `new`, the map's class; at both; at neither
or only at the earlier one), the reference amount of a unit being its new damage
(`new_damage`: its reference amount at the later date when it held none at the earlier one, else
0; a unit-level change, as Olofsson's units are pixels: growth within a unit that already held
the class is not counted).

Sample size (eq. 13, Cochran 5.25): the `n` giving a target standard error `S` of a stratified
mean is `(sum_h W_h S_h / S)^2`, or `(sum W_h S_h)^2 / (S^2 + sum W_h S_h^2 / N)` with the
finite population; `S_h = sqrt(p_h (1 - p_h))` for an anticipated proportion `p_h`.
`allocate` splits `n` over the strata (Neyman, with a floor per stratum, capped at `N_h`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from amberscan.errors import InvalidInput

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Stratum:
    """A stratum of the population: its name, number of units `size` (N_h) and total `area`
    (the same unit as the observations' areas; a unit's area is 1 when not given)."""

    name: str
    size: int
    area: float | None = None

    @property
    def total_area(self) -> float:
        return float(self.size) if self.area is None else float(self.area)


@dataclass(frozen=True)
class Observation:
    """One sampled unit: its stratum, the map's class (`mapped`: the target class), the reference
    amount of the target class in it (`reference`) and its area (`size`, 0 <= reference <= size)."""

    stratum: str
    mapped: bool
    reference: float
    size: float = 1.0


@dataclass(frozen=True)
class Interval:
    """An estimate, its standard error and its 95 % Wald interval (None: not yet estimable)."""

    estimate: float
    se: float | None

    @property
    def low(self) -> float | None:
        return None if self.se is None else self.estimate - Z95 * self.se

    @property
    def high(self) -> float | None:
        return None if self.se is None else self.estimate + Z95 * self.se

    def covers(self, value: float) -> bool:
        """Whether the 95 % interval holds `value` (False while the SE is unknown)."""
        low, high = self.low, self.high
        return low is not None and high is not None and low <= value <= high

    def as_dict(self, scale: float = 1.0, digits: int = 6) -> dict[str, float | None]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v * scale, digits)

        return {
            "estimate": r(self.estimate),
            "se": r(self.se),
            "low": r(self.low),
            "high": r(self.high),
        }


@dataclass(frozen=True)
class StratumSummary:
    name: str
    size: int
    area: float
    sampled: int
    mean: float | None  # of the reference amount per unit


@dataclass(frozen=True)
class AreaEstimate:
    """The target class's area (the observations' unit) and its share of the region, the map's
    user's, producer's and overall accuracy; None where the sample cannot tell yet."""

    area: Interval | None
    proportion: Interval | None
    users: Interval | None
    producers: Interval | None
    overall: Interval | None
    total_area: float
    strata: tuple[StratumSummary, ...]


@dataclass(frozen=True)
class _Stratified:
    """Per-stratum arrays of one sample: N_h, n_h and the units' values by stratum."""

    sizes: NDArray[np.float64]
    groups: tuple[NDArray[np.float64], ...]  # rows: (m, r, a) of each stratum's units

    def total(self, y: tuple[NDArray[np.float64], ...], fpc: bool) -> Interval | None:
        """Stratified estimate of the population total of `y` (one array per stratum)."""
        estimate, variance = 0.0, 0.0
        known = True
        for size, values in zip(self.sizes, y, strict=True):
            n = values.size
            if size == 0:
                continue
            if n == 0:
                return None
            estimate += size * float(values.mean())
            if n >= size:  # a census: no sampling variance
                continue
            if n < 2:
                known = False
                continue
            f = n / size if fpc else 0.0
            variance += size**2 * (1 - f) * float(values.var(ddof=1)) / n
        return Interval(estimate, math.sqrt(variance) if known else None)

    def ratio(
        self, y: tuple[NDArray[np.float64], ...], x: tuple[NDArray[np.float64], ...], fpc: bool
    ) -> Interval | None:
        """Combined ratio estimator of total(y) / total(x) (Stehman 2014 eq. 27-28)."""
        ty, tx = self.total(y, fpc), self.total(x, fpc)
        if ty is None or tx is None or tx.estimate <= 0:
            return None
        ratio = ty.estimate / tx.estimate
        variance = 0.0
        known = True
        for size, yh, xh in zip(self.sizes, y, x, strict=True):
            n = yh.size
            if size == 0 or n >= size:
                continue
            if n < 2:
                known = False
                continue
            f = n / size if fpc else 0.0
            cov = np.cov(yh, xh, ddof=1)
            spread = cov[0, 0] + ratio**2 * cov[1, 1] - 2 * ratio * cov[0, 1]
            variance += size**2 * (1 - f) * float(spread) / n
        se = math.sqrt(max(variance, 0.0)) / tx.estimate if known else None
        return Interval(ratio, se)


def estimate(
    strata: Sequence[Stratum],
    observations: Sequence[Observation],
    *,
    total_area: float | None = None,
    fpc: bool = True,
) -> AreaEstimate:
    """Area of the target class, its share of `total_area` (default: the strata's area), and the
    map's accuracy, from a stratified random sample (the module's docstring has the formulas).

    Raises:
        InvalidInput: an observation of an unknown stratum, a reference amount outside
            [0, size], more observations than units in a stratum, or a repeated stratum.
    """
    names = [s.name for s in strata]
    if len(set(names)) != len(names):
        raise InvalidInput(f"strata named twice: {names}")
    index = {name: i for i, name in enumerate(names)}
    rows: list[list[tuple[float, float, float]]] = [[] for _ in strata]
    for o in observations:
        if o.stratum not in index:
            raise InvalidInput(f"observation in stratum {o.stratum!r}: the strata are {names}")
        if not (o.size >= 0 and -1e-9 <= o.reference <= o.size * (1 + 1e-9) + 1e-12):
            raise InvalidInput(
                f"observation in stratum {o.stratum!r}: reference {o.reference} outside "
                f"[0, {o.size}]"
            )
        rows[index[o.stratum]].append((1.0 if o.mapped else 0.0, o.reference, o.size))
    for s, given in zip(strata, rows, strict=True):
        if len(given) > s.size:
            raise InvalidInput(f"stratum {s.name!r}: {len(given)} observations of {s.size} units")
    groups: tuple[NDArray[np.float64], ...] = tuple(
        np.asarray(given, dtype=np.float64).reshape(-1, 3).T for given in rows
    )
    sample = _Stratified(np.asarray([s.size for s in strata], dtype=np.float64), groups)
    m = tuple(g[0] for g in groups)
    r = tuple(g[1] for g in groups)
    a = tuple(g[2] for g in groups)
    hit = tuple(mh * rh for mh, rh in zip(m, r, strict=True))
    region = float(sum(s.total_area for s in strata)) if total_area is None else total_area
    area = sample.total(r, fpc)
    proportion = None
    if area is not None and region > 0:
        proportion = Interval(area.estimate / region, None if area.se is None else area.se / region)
    agree = tuple(mh * rh + (1 - mh) * (ah - rh) for mh, rh, ah in zip(m, r, a, strict=True))
    return AreaEstimate(
        area=area,
        proportion=proportion,
        users=sample.ratio(hit, tuple(mh * ah for mh, ah in zip(m, a, strict=True)), fpc),
        producers=sample.ratio(hit, r, fpc),
        overall=sample.ratio(agree, a, fpc),
        total_area=region,
        strata=tuple(
            StratumSummary(
                s.name, s.size, s.total_area, int(rh.size), float(rh.mean()) if rh.size else None
            )
            for s, rh in zip(strata, r, strict=True)
        ),
    )


def sample_size(
    weights: Sequence[float],
    stdevs: Sequence[float],
    target_se: float,
    sizes: Sequence[int] | None = None,
) -> int:
    """The sample size giving `target_se` for a stratified mean (Olofsson 2014 eq. 13; with
    `sizes`, the N_h, Cochran's 5.25 with the finite population correction).

    `weights` are the strata's shares W_h of the area, `stdevs` the anticipated standard
    deviations S_h of the per-unit value (sqrt(p_h (1 - p_h)) for a proportion p_h).

    Raises:
        InvalidInput: a target that is not positive, or weights and stdevs that do not match.
    """
    if not target_se > 0:
        raise InvalidInput(f"target standard error {target_se}: must be positive")
    if len(weights) != len(stdevs) or (sizes is not None and len(sizes) != len(weights)):
        raise InvalidInput("weights, stdevs (and sizes) need one value per stratum")
    spread = sum(w * s for w, s in zip(weights, stdevs, strict=True))
    if sizes is None:
        return max(1, math.ceil((spread / target_se) ** 2 - 1e-9))
    finite = sum(w * s * s / n for w, s, n in zip(weights, stdevs, sizes, strict=True) if n > 0)
    return max(1, math.ceil(spread**2 / (target_se**2 + finite) - 1e-9))


def allocate(
    n: int,
    weights: Sequence[float],
    stdevs: Sequence[float] | None = None,
    *,
    minimum: int = 0,
    sizes: Sequence[int] | None = None,
) -> list[int]:
    """Split `n` sample units over the strata: each at least `minimum` (Olofsson's advice for
    rare classes; at most n / k each when n is small), the rest in proportion to W_h S_h (Neyman; proportional without `stdevs`),
    none above its N_h (`sizes`); the counts add up to `n` unless the strata hold fewer units.
    Rounded by largest remainder, so proportional allocation of 641 over the paper's strata
    gives its 13, 10, 205, 413."""
    k = len(weights)
    spread = [
        w * (1.0 if stdevs is None else s) for w, s in zip(weights, stdevs or weights, strict=True)
    ]
    caps = [math.inf] * k if sizes is None else [float(s) for s in sizes]
    n = int(min(n, sum(caps)))
    # The floor, when n allows it: a small n is shared out evenly first.
    floor = min(minimum, n // max(1, sum(1 for i in range(k) if weights[i] > 0)))
    counts = [int(min(floor, caps[i])) if weights[i] > 0 else 0 for i in range(k)]
    while True:
        left = n - sum(counts)
        open_ = [i for i in range(k) if counts[i] < caps[i] and spread[i] > 0]
        if left <= 0 or not open_:
            return counts
        share = sum(spread[i] for i in open_)
        # Neyman over what is left, on top of each open stratum's floor.
        target = {i: left * spread[i] / share for i in open_}
        whole = {i: min(math.floor(target[i]), caps[i] - counts[i]) for i in open_}
        for i, extra in whole.items():
            counts[i] += int(extra)
        left = n - sum(counts)
        order = sorted(open_, key=lambda i: target[i] - math.floor(target[i]), reverse=True)
        for i in order:
            if left <= 0:
                break
            if counts[i] < caps[i]:
                counts[i] += 1
                left -= 1


def proportion_stdev(p: float) -> float:
    """The standard deviation of a 0/1 value with mean `p`: sqrt(p (1 - p))."""
    return math.sqrt(min(max(p, 0.0), 1.0) * (1 - min(max(p, 0.0), 1.0)))


def plan(
    strata: Sequence[Stratum],
    anticipated: Sequence[float],
    *,
    n: int | None = None,
    target_se: float | None = None,
    minimum: int = 0,
) -> list[int]:
    """Per-stratum sample sizes for a design: `n` units, or as many as a `target_se` of the
    target class's area proportion needs (eq. 13 with the finite population), given each
    stratum's `anticipated` proportion of the target class; allocated by `allocate`.

    Raises:
        InvalidInput: neither or both of `n` and `target_se`, or a wrong number of proportions.
    """
    if (n is None) == (target_se is None):
        raise InvalidInput("give a sample size n or a target standard error, not both")
    if len(anticipated) != len(strata):
        raise InvalidInput(f"{len(anticipated)} anticipated proportions for {len(strata)} strata")
    region = sum(s.total_area for s in strata)
    if region <= 0:
        raise InvalidInput("the strata hold no area: nothing to sample")
    weights = [s.total_area / region for s in strata]
    stdevs = [proportion_stdev(p) for p in anticipated]
    sizes = [s.size for s in strata]
    if n is None:
        assert target_se is not None
        n = sample_size(weights, stdevs, target_se, sizes)
    if n < 1:
        raise InvalidInput(f"sample size {n}: must be at least 1")
    return allocate(n, weights, stdevs, minimum=minimum, sizes=sizes)


# The strata of a change design, from the map's verdicts at the two dates.
CHANGE_STRATA = ("new", "both", "neither")


def change_stratum(flagged_before: bool, flagged_after: bool) -> str:
    """A unit's stratum on the change map of two vintages: `new` (flagged at the later date
    only: the map's new damage), `both`, or `neither` (not flagged at the later date)."""
    if flagged_after:
        return "both" if flagged_before else "new"
    return "neither"


def new_damage(later: float | None, earlier: bool | None) -> float | None:
    """A unit's reference amount of new damage between two dates: 0 when it holds none at the
    later date (`later`, its reference amount then, is 0) or held some at the earlier one
    (`earlier` True), else `later`; None while a judgement it needs is missing (`later` None,
    or `earlier` None with damage at the later date)."""
    if later is None:
        return None
    if later == 0:
        return 0.0
    if earlier is None:
        return None
    return 0.0 if earlier else later
