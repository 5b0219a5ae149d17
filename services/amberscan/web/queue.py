"""The review queue's order: which tile would a verdict teach the model most? Pure.

The rule (`priority`), stated once; a tile's priority is the sum of:
- **closeness** to the decision, from 0 to 1: `max(0, 1 − |s − t| / MARGIN)`, where `t` is the
  classifier's threshold and `s` the tile's *decisive score*, the (m+1)-th highest superpixel
  score under the rule "flagged when more than m superpixels are positive": the tile's verdict
  flips exactly when that score crosses `t` (so it covers both the scores near the threshold and
  a positive count near the rule's `> m`). 1 when it sits on the threshold, 0 at `MARGIN` or more
  away; 0 for a tile with m or fewer superpixels;
- **+1** when another model's detection of the same imagery (a candidate replayed beside the
  current one) disagrees on the flag;
- **+1** when a reviewer rejected the tile and a later model flags it again (`reflagged`);
- **+0.5** when the tile's previous vintage disagrees on the flag (a change between vintages
  that is either new damage or a mistake in one of them);
- **+1** when it is flagged and nobody has reviewed it: a finding on the map unchecked, and the
  tiles whose verdict always teaches (a verdict labels the positive superpixels of its tile,
  `core.labels_from_verdict`: a rejection gives hard negatives; a verdict on a tile that is not
  flagged labels nothing unless the reviewer marks superpixels).

Highest priority first; ties by tile id, then imagery date, so the order is reproducible.
Reviewed tiles are not queued (their verdict has taught what it can) except reflagged ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")

MARGIN = 0.25
CANDIDATE_DISAGREES = 1.0
REFLAGGED = 1.0
VINTAGE_DISAGREES = 0.5
FLAGGED_UNREVIEWED = 1.0
RULE = (
    f"priority = closeness (1 − |decisive score − threshold| / {MARGIN}, floored at 0; the "
    "decisive score is the (m+1)-th highest superpixel score for the rule 'flagged when more "
    f"than m are positive') + {CANDIDATE_DISAGREES:g} if another model disagrees on the flag "
    f"+ {REFLAGGED:g} if rejected by a reviewer and flagged again + {VINTAGE_DISAGREES:g} if the "
    f"previous vintage disagrees + {FLAGGED_UNREVIEWED:g} if flagged and unreviewed; highest "
    "first, ties by tile id and imagery date; reviewed tiles are left out unless reflagged"
)


@dataclass(frozen=True)
class Candidate:
    """A tile's detection as the queue weighs it.

    Attributes:
        scores: the superpixel scores of the detection's model.
        threshold: that model's score threshold.
        min_positives: m of the rule "flagged when more than m superpixels are positive".
        other_flagged: another model's flag on the same imagery (None: no other model).
        previous_flagged: the tile's flag in its previous vintage (None: no earlier vintage).
        reviewed: someone gave a verdict; `reflagged`: it was a rejection and a later model
            flags the tile again.
    """

    tile_id: str
    imagery_date: str
    model_version: str
    flagged: bool
    scores: Sequence[float]
    threshold: float
    min_positives: int
    other_flagged: bool | None = None
    previous_flagged: bool | None = None
    reviewed: bool = False
    reflagged: bool = False


@dataclass(frozen=True)
class Priority:
    value: float
    decisive_score: float | None
    reasons: list[str] = field(default_factory=list)


def decisive_score(scores: Sequence[float], min_positives: int) -> float | None:
    """The (m+1)-th highest score: the tile is flagged exactly when it reaches the threshold.
    None when the tile has m or fewer superpixels (it can never be flagged)."""
    if min_positives < 0:
        raise ValueError(f"min_positives {min_positives}: must be 0 or more")
    if len(scores) <= min_positives:
        return None
    return sorted((float(s) for s in scores), reverse=True)[min_positives]


def priority(tile: Candidate) -> Priority:
    """How much a verdict on `tile` would teach, by the module's rule, with its reasons."""
    decisive = decisive_score(tile.scores, tile.min_positives)
    closeness = 0.0
    reasons = []
    if decisive is not None:
        closeness = max(0.0, 1.0 - abs(decisive - tile.threshold) / MARGIN)
        if closeness > 0:
            reasons.append(
                f"decisive score {decisive:.3f} is {abs(decisive - tile.threshold):.3f} from the "
                f"threshold {tile.threshold:.3f}"
            )
    value = closeness
    if tile.other_flagged is not None and tile.other_flagged != tile.flagged:
        value += CANDIDATE_DISAGREES
        reasons.append("another model disagrees on the flag")
    if tile.reflagged:
        value += REFLAGGED
        reasons.append("rejected by a reviewer, flagged again by a later model")
    if tile.previous_flagged is not None and tile.previous_flagged != tile.flagged:
        value += VINTAGE_DISAGREES
        reasons.append("the previous vintage disagrees on the flag")
    if tile.flagged and not tile.reviewed:
        value += FLAGGED_UNREVIEWED
        reasons.append("flagged, nobody has reviewed it")
    return Priority(round(value, 9), decisive, reasons)


def _rank(weighed: tuple[Candidate, Priority]) -> tuple[float, str, str]:
    tile, p = weighed
    return (-p.value, tile.tile_id, tile.imagery_date)


def order(tiles: Iterable[Candidate]) -> list[tuple[Candidate, Priority]]:
    """The queue: tiles not yet reviewed (or reflagged), highest priority first, ties by tile
    id then imagery date."""
    weighed = [(t, priority(t)) for t in tiles if not t.reviewed or t.reflagged]
    weighed.sort(key=_rank)
    return weighed


class Top(Generic[Item]):
    """The head of the queue, kept while tiles stream in: after every `add`, `head()` is the
    first `limit` of `order` over the tiles added, each with the item it was added with (a
    row to answer with), and `matched` counts every tile the queue holds. Memory holds at most
    2 × `limit` tiles, however many are added (an unscoped queue weighs a whole survey)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit {limit}: must be 1 or more")
        self.limit = limit
        self.matched = 0
        self._kept: list[tuple[tuple[float, str, str], Candidate, Priority, Item]] = []

    def add(self, tile: Candidate, item: Item) -> None:
        if tile.reviewed and not tile.reflagged:
            return
        self.matched += 1
        p = priority(tile)
        self._kept.append((_rank((tile, p)), tile, p, item))
        if len(self._kept) >= 2 * self.limit:
            self._prune()

    def _prune(self) -> None:
        self._kept.sort(key=lambda kept: kept[0])
        del self._kept[self.limit :]

    def head(self) -> list[tuple[Candidate, Priority, Item]]:
        self._prune()
        return [(tile, p, item) for _, tile, p, item in self._kept]
