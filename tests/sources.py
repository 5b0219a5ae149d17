"""The source policy of the tests (#26 defect 8): the imagery servers they start listen on
loopback, their rasters and tile folders are in the temporary directory, the checkout or the
shared data set, and their `s3://` sources in the test's own bucket; production admits none of
these. `tests/conftest.py` puts these variables in the environment of the whole session, so
the commands the tests run in-process and the services they start read them too."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from amberscan.common.data import SharedDataMissing, shared_data_dir
from amberscan.common.settings import ImageryConfig, Settings, replace
from amberscan.imagery.providers import Fetcher, SourceGuard

ROOT = Path(__file__).resolve().parents[1]
# A path under the tests' roots where nothing is: a missing file, not a refused one.
MISSING = Path(tempfile.gettempdir()) / "amberscan-nonexistent"


def local_source_fields(buckets: str = "") -> dict[str, str]:
    """The `ImageryConfig` fields of the tests' source policy (`buckets`: the s3 ones)."""
    roots = [tempfile.gettempdir(), str(ROOT)]
    try:
        roots.append(str(shared_data_dir(Settings().data)))
    except SharedDataMissing:
        pass  # the tests that need it fail on their own fixture, saying so
    return {
        "source_schemes": "https,http,s3",
        "source_allowed_hosts": "*,127.0.0.1,localhost,::1",
        "source_allowed_roots": ",".join(roots),
        "source_allowed_buckets": buckets,
    }


def local_source_variables() -> dict[str, str]:
    """The same policy as `AMBERSCAN_SOURCE_*` variables."""
    fields = ImageryConfig.model_fields
    return {str(fields[name].alias): value for name, value in local_source_fields().items()}


def local_sources(settings: Settings, buckets: str = "") -> Settings:
    """`settings` with the tests' source policy."""
    return replace(settings, imagery=local_source_fields(buckets))


def local_guard() -> SourceGuard:
    """The tests' source policy, for the providers a test builds by hand (they take one)."""
    return SourceGuard.from_settings(local_sources(Settings()))


def local_fetcher(**options: Any) -> Fetcher:
    """A `Fetcher` with `options` under the tests' source policy."""
    return Fetcher(guard=local_guard(), **options)
