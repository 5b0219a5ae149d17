"""The model registry: classifiers stored in the blob store under `models/classifier/`.

Every classifier is kept (`models/classifier/<version>.json`, its lineage in its metadata).
Publishing adds a **candidate**: it changes nothing that is served. Only a promotion
(`amberscan models promote`, through the gate) or a rollback moves `current.json`, the pointer
services read, and each move is appended to `history.json` with who made it, when, and the
gate's figures (or that it was forced). I/O (the blob store and the settings), hence here with
the other I/O and not in the pure `model/`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from amberscan import keys
from amberscan.common.blobstore import BlobStore, MissingBlob
from amberscan.common.settings import S3Config
from amberscan.errors import AmberscanError
from amberscan.model.classifier import Classifier

PREFIX = f"{keys.MODELS}/classifier"
CURRENT = f"{PREFIX}/current.json"
HISTORY = f"{PREFIX}/history.json"


class RegistryError(AmberscanError):
    """A version the registry does not hold, or a move it cannot make (nothing to roll back to)."""


@dataclass(frozen=True)
class Pointer:
    """What `current.json` says: the version services score with and the backbone it needs."""

    version: str
    key: str
    backbone: str = ""


def version_key(version: str) -> str:
    return f"{PREFIX}/{version}.json"


async def publish(s3: S3Config, classifier: Classifier) -> str:
    """Store `classifier` as a candidate (nothing served changes) and return its key."""
    store = BlobStore(s3)
    await store.ensure_bucket()
    key = version_key(classifier.version)
    await store.put_at(key, classifier.to_json(), "application/json")
    return key


async def pointer(s3: S3Config) -> Pointer:
    """The current pointer (MissingBlob when nothing was promoted yet)."""
    document = json.loads(await BlobStore(s3).get(CURRENT))
    return Pointer(
        str(document["version"]), str(document["key"]), str(document.get("backbone", ""))
    )


async def load_current(s3: S3Config) -> Classifier:
    """The classifier `current.json` names."""
    current = await pointer(s3)
    return Classifier.from_json(await BlobStore(s3).get(current.key), current.key)


async def current_version(s3: S3Config) -> str:
    """The version `current.json` names (MissingBlob when nothing was promoted)."""
    return (await pointer(s3)).version


async def load_version(s3: S3Config, version: str) -> Classifier:
    """Classifier `version` from the registry.

    Raises:
        RegistryError: the registry holds no such version.
    """
    key = version_key(version)
    try:
        data = await BlobStore(s3).get(key)
    except MissingBlob:
        raise RegistryError(f"the model registry holds no classifier {version!r}") from None
    return Classifier.from_json(data, key)


async def load_current_or_file(s3: S3Config, path: Path) -> Classifier:
    """The classifier the pipeline scores with now: the registry's current one, else the file
    at `path` (`AMBERSCAN_CLASSIFIER_PATH`: a stack whose registry has none yet)."""
    try:
        return await load_current(s3)
    except MissingBlob:
        return await asyncio.to_thread(Classifier.load, path)


async def history(s3: S3Config) -> list[dict[str, Any]]:
    """Every move of `current.json`, oldest first."""
    try:
        return list(json.loads(await BlobStore(s3).get(HISTORY)))
    except MissingBlob:
        return []


async def versions(s3: S3Config) -> list[str]:
    """Every classifier version the registry holds, sorted."""
    names = await BlobStore(s3).list(f"{PREFIX}/")
    found = []
    for name in names:
        if name in (CURRENT, HISTORY) or not name.endswith(".json"):
            continue
        found.append(name.rsplit("/", 1)[-1].removesuffix(".json"))
    return sorted(found)


async def make_current(
    s3: S3Config, classifier: Classifier, *, action: str, by: str, **record: Any
) -> dict[str, Any]:
    """Point `current.json` at `classifier` (stored first if it is not yet) and record the move
    in the history: `action` ("promote", "rollback"), who, when, and `record` (the gate)."""
    store = BlobStore(s3)
    await store.ensure_bucket()
    key = version_key(classifier.version)
    if not await store.exists(key):
        await store.put_at(key, classifier.to_json(), "application/json")
    previous = ""
    try:
        previous = (await pointer(s3)).version
    except MissingBlob:
        pass
    entry = {
        "action": action,
        "version": classifier.version,
        "previous": previous,
        "by": by,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        **record,
    }
    moves = [*await history(s3), entry]
    await store.put_at(HISTORY, json.dumps(moves, indent=1).encode(), "application/json")
    document = {"version": classifier.version, "key": key, "backbone": classifier.backbone}
    await store.put_at(CURRENT, json.dumps(document).encode(), "application/json")
    return entry


async def rollback_target(s3: S3Config) -> str:
    """The version served before the current one (what `rollback` makes current).

    Raises:
        RegistryError: nothing was served before it.
    """
    moves = await history(s3)
    if not moves or not moves[-1].get("previous"):
        raise RegistryError("nothing to roll back to: no model was current before this one")
    return str(moves[-1]["previous"])


# The lineage `catalogue` lists per version, in this order (`describe` gives all of it).
LINEAGE = (
    "backbone",
    "threshold_source",
    "target_precision",
    "holdout",
    "calibration_share",
    "calibration",
    "data_fingerprint",
    "reviewed_crops",
    "review_sources",
    "n_samples",
    "n_tiles",
    "gate_share",
    "trained_at",
    "code_version",
)


async def current_or_none(s3: S3Config) -> str:
    """The current version, "" when nothing was promoted yet."""
    try:
        return await current_version(s3)
    except MissingBlob:
        return ""


def _summary(classifier: Classifier, state: str) -> dict[str, Any]:
    meta = classifier.metadata
    return {
        "version": classifier.version,
        "state": state,
        "threshold": classifier.threshold,
        **{k: meta[k] for k in LINEAGE if k in meta},
    }


async def catalogue(s3: S3Config) -> dict[str, Any]:
    """Every version with its state (current, previous: served before, candidate) and lineage."""
    current = await current_or_none(s3)
    served = {m["version"] for m in await history(s3)}
    rows = []
    for version in await versions(s3):
        state = (
            "current" if version == current else "previous" if version in served else "candidate"
        )
        rows.append(_summary(await load_version(s3, version), state))
    return {"current": current, "models": rows}


async def describe(s3: S3Config, version: str) -> dict[str, Any]:
    """One version ("current" for the current one): its state, lineage, training CV and moves.

    Raises:
        RegistryError: no such version, or "current" while nothing is current.
    """
    current = await current_or_none(s3)
    if version == "current":
        if not current:
            raise RegistryError("no model is current yet")
        version = current
    classifier = await load_version(s3, version)
    moves = [m for m in await history(s3) if m["version"] == version]
    state = "current" if version == current else "previous" if moves else "candidate"
    return {
        **_summary(classifier, state),
        "metadata": {k: v for k, v in classifier.metadata.items() if k != "cv"},
        "cv": classifier.metadata.get("cv", {}),
        "history": moves,
    }
