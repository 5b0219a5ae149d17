"""pystac-client's I/O with the source policy (#26 defect 8): every catalogue, item and link a
STAC source reads is checked before it is requested, every redirect hop before it is followed
(a `requests` response hook, which runs on each response of a redirect chain), every
connection goes to an address checked as it is made (`checked_http.CheckedAdapter`), and a
local href is read only under the allowed roots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import requests
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from requests.adapters import HTTPAdapter

from amberscan.imagery.providers.base import SourceRefused
from amberscan.imagery.providers.checked_http import CheckedAdapter

if TYPE_CHECKING:
    from amberscan.imagery.providers.guard import SourceGuard


class CheckedStacIO(StacApiIO):
    """A `StacApiIO` that asks `guard` before each request, hop and local read."""

    def __init__(self, guard: SourceGuard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guard = guard
        self.session.trust_env = False  # a proxy from the environment would be what is reached
        for prefix in ("http://", "https://"):
            mounted = self.session.get_adapter(prefix)  # pystac-client's, with its retries
            retries = mounted.max_retries if isinstance(mounted, HTTPAdapter) else 0
            self.session.mount(prefix, CheckedAdapter(guard, max_retries=retries))
        self.session.hooks["response"].append(self._check_redirect)

    def _check_redirect(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        location = response.headers.get("Location")
        if response.is_redirect and location:
            self.guard.check_url(urljoin(response.url, location))

    def request(self, href: str, *args: Any, **kwargs: Any) -> str:
        self.guard.check(href)
        try:
            text: str = super().request(href, *args, **kwargs)
        except APIError as error:
            # pystac-client wraps what the session raises: a refused hop stays a refusal.
            if isinstance(error.__context__, SourceRefused):
                raise error.__context__ from None
            raise
        return text

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = str(source) if isinstance(source, str) else ""
        if href and not (urlsplit(href).scheme and urlsplit(href).netloc):
            self.guard.check_path(href)  # a local catalogue or link: only under the roots
        text: str = super().read_text(source, *args, **kwargs)
        return text
