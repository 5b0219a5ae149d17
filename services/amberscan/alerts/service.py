"""Alerts runner: finished watch rounds → events → deliveries → webhooks, e-mails, feed entries.

It runs inside each watch replica (`amberscan serve watch`), beside its rounds, every
`AMBERSCAN_ALERT_POLL_S`. A pass: (1) each watch round whose scan has a status for every tile
is looked at once, and its new damage recorded as events; one that waited
`AMBERSCAN_ALERT_ROUND_WAIT_S` without all its tiles is looked at on every pass, its late tiles'
damage recorded as they come, until complete or `alerts.store.LATE_TILES_S` later (events:
`alerts.core`'s `flagged`, `high`); reviewers' confirmations of watched tiles as `confirmed`
events; (2) each subscription's events not yet delivered to it are gathered into one
delivery (a feed's is published there and then); (3) pending deliveries are claimed one at a
time and sent, each attempt logged, retried under the shared retry policy
(`AMBERSCAN_MAX_RETRIES`, `AMBERSCAN_RETRY_BACKOFF_S`, full jitter, the receiver's
`Retry-After`); when the retries are used up, or the receiver refuses for good (a 4xx other than
408 and 429, an SMTP 5xx), the delivery ends `failed` and is not sent again.

Guarantee: each event (region, tile, imagery date, level) is recorded once (its primary key) and
gathered into exactly one delivery per subscription (the key (subscription, event)), whichever
replica, round or restart sees it first: a model change alone never alerts (the key has no
model). Sending is at-least-once with a window of one attempt: a delivery is claimed with a
lease of `AMBERSCAN_WATCH_LEASE_S` and a fencing token, and marked sent after the receiver
accepted it; a replica killed between the receiver's 2xx (or the SMTP server's 250) and that
mark leaves it pending, and after its lease another replica sends it again with the same
`X-Amberscan-Delivery` id, which a receiver uses to drop the repeat. A replica whose claim
was taken writes nothing more (`DeliveryLost`).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import time
from typing import Protocol

import aiohttp

from amberscan.alerts import core, store
from amberscan.alerts.core import Alert
from amberscan.common.db import Database
from amberscan.common.retry import RetryPolicy, parse_retry_after
from amberscan.common.settings import AlertConfig, RetryConfig
from amberscan.errors import AmberscanError, TransientError

log = logging.getLogger(__name__)


class AlertSettings(Protocol):
    """What sending alerts needs: its own settings and the shared retry policy."""

    @property
    def alerts(self) -> AlertConfig: ...
    @property
    def retry(self) -> RetryConfig: ...


class Refused(AmberscanError):
    """The destination refused the delivery for good (not retried)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unavailable(TransientError):
    """The destination did not take the delivery this time (retried)."""

    def __init__(
        self, message: str, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.status = status


async def send_webhook(
    session: aiohttp.ClientSession,
    url: str,
    secret: str,
    alert: Alert,
    config: AlertConfig,
    now: float | None = None,
) -> int:
    """POST the signed payload; returns the receiver's status (2xx).

    Raises:
        Unavailable: unreachable, a timeout, a 5xx, 408 or 429 (with its Retry-After).
        Refused: any other answer.
    """
    body = core.body(alert, config.base_url)
    timestamp = int(time.time() if now is None else now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "amberscan-alerts",
        core.SIGNATURE_HEADER: core.signature_header(secret, timestamp, body),
        core.DELIVERY_HEADER: str(alert.delivery_id),
    }
    where = f"webhook {url} (delivery {alert.delivery_id})"
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=config.timeout_s),
            allow_redirects=False,
        ) as response:
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise Unavailable(f"{where}: {type(error).__name__}: {error}") from error
    if 200 <= status < 300:
        return status
    if status >= 500 or status in (408, 429):
        raise Unavailable(f"{where}: HTTP {status}", status, retry_after)
    raise Refused(f"{where}: HTTP {status}", status)


def _smtp_send(config: AlertConfig, alert: Alert, to: str) -> None:
    message = core.email_message(alert, config.base_url, config.smtp_from, to)
    where = f"e-mail to {to} via {config.smtp_host}:{config.smtp_port}"
    try:
        smtp: smtplib.SMTP
        if config.smtp_tls == "tls":
            smtp = smtplib.SMTP_SSL(
                config.smtp_host,
                config.smtp_port,
                timeout=config.timeout_s,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout_s)
        with smtp:
            if config.smtp_tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if config.smtp_username:
                smtp.login(config.smtp_username, config.smtp_password)
            smtp.send_message(message)
    except smtplib.SMTPResponseException as error:
        text = f"{where}: SMTP {error.smtp_code} {error.smtp_error!r}"
        if 400 <= error.smtp_code < 500:
            raise Unavailable(text, error.smtp_code) from error
        raise Refused(text, error.smtp_code) from error
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        if codes and all(400 <= c < 500 for c in codes):
            raise Unavailable(f"{where}: recipient refused for now {codes}") from error
        raise Refused(f"{where}: recipient refused {codes}") from error
    except (smtplib.SMTPException, OSError) as error:
        raise Unavailable(f"{where}: {type(error).__name__}: {error}") from error


async def send_email(config: AlertConfig, alert: Alert, to: str) -> int:
    """Send the delivery's e-mail through the configured SMTP server; returns 250.

    Raises:
        Unavailable: the server unreachable, a 4xx, a timeout.
        Refused: no SMTP server configured, a 5xx.
    """
    if not config.smtp_host:
        raise Refused(f"e-mail to {to}: no SMTP server configured (AMBERSCAN_SMTP_HOST)")
    await asyncio.to_thread(_smtp_send, config, alert, to)
    return 250


async def send(
    session: aiohttp.ClientSession, config: AlertConfig, alert: Alert, sub: store.Subscription
) -> int | None:
    """One attempt at a delivery to its subscription's destination; the receiver's status."""
    if sub.kind == "webhook":
        return await send_webhook(session, sub.target, sub.secret, alert, config)
    if sub.kind == "email":
        return await send_email(config, alert, sub.target)
    return None  # a feed's entry is published when the delivery is made


async def deliver(
    db: Database,
    settings: AlertSettings,
    session: aiohttp.ClientSession,
    claim: store.Claim,
    stop: asyncio.Event | None = None,
) -> str:
    """Send a claimed delivery, each attempt logged, retried under the shared policy (counting
    the attempts an earlier claim made); returns how it ended: "sent" or "failed", or
    "released" when `stop` was set during a retry's wait (the claim given back, so another
    replica takes it over at once).

    Raises:
        DeliveryLost: another replica claimed it meanwhile.
    """
    policy = RetryPolicy.from_config(settings.retry)
    alert, sub = await store.alert(db, claim.delivery_id)
    attempt = claim.attempts
    while True:
        attempt += 1
        if sub.kind == "feed":
            await store.log_attempt(db, claim, attempt, "sent")
            return "sent"
        try:
            status = await send(session, settings.alerts, alert, sub)
        except Unavailable as error:
            if attempt > policy.retries:
                await store.log_attempt(
                    db, claim, attempt, "failed", status=error.status, error=str(error)
                )
                log.warning(
                    "alert delivery failed after its retries",
                    extra={"delivery": claim.delivery_id, "error": str(error)},
                )
                return "failed"
            await store.log_attempt(
                db, claim, attempt, "retry", status=error.status, error=str(error)
            )
            if await _stopped(stop, policy.delay(attempt, error)):
                await store.release(db, claim)
                return "released"
            continue
        except Refused as error:
            await store.log_attempt(
                db, claim, attempt, "failed", status=error.status, error=str(error)
            )
            log.warning(
                "alert delivery refused",
                extra={"delivery": claim.delivery_id, "error": str(error)},
            )
            return "failed"
        await store.log_attempt(db, claim, attempt, "sent", status=status)
        log.info(
            "alert delivered",
            extra={"delivery": claim.delivery_id, "tiles": len(alert.tiles), "kind": sub.kind},
        )
        return "sent"


async def _stopped(stop: asyncio.Event | None, wait_s: float) -> bool:
    """Wait `wait_s`; True (at once) when `stop` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(wait_s)
        return False
    try:
        await asyncio.wait_for(stop.wait(), timeout=wait_s)
    except TimeoutError:
        return False
    return True


async def send_test(
    db: Database, settings: AlertSettings, subscription_id: int, owner: str
) -> dict[str, object]:
    """Send a sample alert to a subscription now (a feed publishes it), logged like any
    delivery; returns the delivery's id and how it ended."""
    await store.subscription(db, subscription_id)
    delivery = await store.add_test_delivery(db, subscription_id)
    claim = await store.claim_test(db, delivery, owner, 3600.0)
    async with aiohttp.ClientSession() as session:
        state = await deliver(db, settings, session, claim)
    (entry,) = [d for d in await store.log(db, subscription_id) if d["delivery_id"] == delivery]
    return {"delivery_id": delivery, "state": state, "log": entry["log"]}


class Alerter:
    """One replica's alerting: its identity (claim owner), database and settings."""

    def __init__(
        self, settings: AlertSettings, db: Database, owner: str, lease_s: float = 600.0
    ) -> None:
        self.settings = settings
        self.db = db
        self.owner = owner
        self.lease_s = lease_s

    async def run_once(self, stop: asyncio.Event | None = None) -> dict[str, int]:
        """One pass: record events, gather deliveries, send every pending one (until `stop`);
        counts."""
        config = self.settings.alerts
        events = 0
        for due in await store.rounds_due(self.db, config.round_wait_s):
            found = core.events_of(
                await store.verdicts(self.db, due.scan_id, due.watch_id), config.high_score
            )
            events += await store.record_round(self.db, due.scan_id, found, due.closes)
        events += await store.record_confirmed(self.db)
        made = await store.make_deliveries(self.db)
        ended = {"sent": 0, "failed": 0, "released": 0}
        async with aiohttp.ClientSession() as session:
            while not (stop and stop.is_set()) and (
                claim := await store.claim(self.db, self.owner, self.lease_s)
            ):
                try:
                    ended[await deliver(self.db, self.settings, session, claim, stop)] += 1
                except store.DeliveryLost as lost:
                    log.warning("alert delivery taken over", extra={"error": str(lost)})
        return {"events": events, "deliveries": len(made), **ended}

    async def run(self, stop: asyncio.Event) -> None:
        """Passes every `AMBERSCAN_ALERT_POLL_S` until `stop`; a failed pass is logged and the
        next one tries again (what it left pending is sent then)."""
        while not stop.is_set():
            try:
                await self.run_once(stop)
            except Exception:  # noqa: BLE001 - the database away: the next pass tries again
                log.exception("alerts pass failed, will try again")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.alerts.poll_s)
            except TimeoutError:
                pass
