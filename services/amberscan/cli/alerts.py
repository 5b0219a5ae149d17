"""`amberscan alerts add|list|remove|test|log`: subscriptions to a watched region's alerts
(watch sends them: `amberscan serve watch`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from typing import TYPE_CHECKING

from amberscan.cli import options

if TYPE_CHECKING:
    from amberscan.common.settings import Settings

# `amberscan.alerts.core.LEVELS` (a test checks they agree; `--help` stays instant).
LEVELS = ("flagged", "high", "confirmed")


def add_parser(sub: options.Subparsers) -> None:
    p = options.command(
        sub,
        "alerts",
        "alerts of a watched region: webhook, e-mail, feed",
        run,
        description="Subscriptions to a watched region's alerts: new damage flagged by the model, "
        "new damage above AMBERSCAN_ALERT_HIGH_SCORE, or damage a reviewer confirmed, delivered "
        "as a signed webhook, an e-mail or an Atom feed (watch sends them: `amberscan serve "
        "watch`).",
        examples=[
            "amberscan alerts add 3 --webhook https://hooks.example.org/amber --level high",
            "amberscan alerts list --watch 3",
            "amberscan alerts log 7",
        ],
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = options.action(
        actions,
        "add",
        "subscribe to a watched region's alerts",
        examples=[
            "amberscan alerts add 3 --webhook https://hooks.example.org/amber",
            "amberscan alerts add 3 --email desk@example.org --level confirmed",
            "amberscan alerts add 3 --feed",
        ],
    )
    add.add_argument("watch_id", type=int, help="the region (`amberscan watch list`)")
    add.add_argument(
        "--level",
        choices=list(LEVELS),
        default="flagged",
        help="flagged: new damage; high: new damage above AMBERSCAN_ALERT_HIGH_SCORE; "
        "confirmed: confirmed by a reviewer (default flagged)",
    )
    to = add.add_mutually_exclusive_group(required=True)
    to.add_argument("--webhook", metavar="URL", help="POST signed JSON here (https)")
    to.add_argument("--email", metavar="ADDRESS", help="send e-mail through AMBERSCAN_SMTP_HOST")
    to.add_argument("--feed", action="store_true", help="publish an Atom feed")
    lister = options.action(
        actions,
        "list",
        "the subscriptions (never their secrets)",
        examples=["amberscan alerts list", "amberscan alerts list --watch 3 --json"],
    )
    lister.add_argument("--watch", type=int, help="only this region's")
    options.add_json(lister, "print the subscriptions as one JSON array")
    remove = options.action(
        actions, "remove", "cancel a subscription", examples=["amberscan alerts remove 7"]
    )
    remove.add_argument("subscription_id", type=int, help="the subscription (`alerts list`)")
    test = options.action(
        actions,
        "test",
        "send a sample alert to a subscription now",
        examples=["amberscan alerts test 7"],
    )
    test.add_argument("subscription_id", type=int, help="the subscription (`alerts list`)")
    logs = options.action(
        actions,
        "log",
        "a subscription's deliveries and their attempts",
        examples=["amberscan alerts log 7", "amberscan alerts log 7 --json"],
    )
    logs.add_argument("subscription_id", type=int, help="the subscription (`alerts list`)")
    options.add_json(logs, "print the deliveries as one JSON array")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from amberscan.alerts import service, store
    from amberscan.common.db import Database

    async with Database(settings.database) as db:
        if args.action == "add":
            kind = "webhook" if args.webhook else "email" if args.email else "feed"
            sub = await store.subscribe(
                db, args.watch_id, args.level, kind, args.webhook or args.email or ""
            )
            print(f"alert subscription {sub.subscription_id}: watch {sub.watch_id}, {sub.level}")
            if kind == "webhook":
                print(f"signing secret (shown once; verify X-Amberscan-Signature): {sub.secret}")
            elif kind == "email" and not settings.alerts.smtp_host:
                print(
                    "amberscan: warning: AMBERSCAN_SMTP_HOST is empty here: watch needs it to "
                    "send e-mail",
                    file=sys.stderr,
                )
            elif kind == "feed":
                base = settings.alerts.base_url.rstrip("/")
                print(f"feed: {base}/api/alerts/{sub.subscription_id}/feed.atom")
        elif args.action == "list":
            subs = [s.public() for s in await store.subscriptions(db, args.watch)]
            if args.json:
                print(json.dumps(subs))
            for s in [] if args.json else subs:
                print(
                    f"{s['subscription_id']:>4}  watch {s['watch_id']:<4} {s['level']:<9} "
                    f"{s['kind']:<7} {s['target'] or '-'}"
                )
        elif args.action == "remove":
            await store.unsubscribe(db, args.subscription_id)
            print(f"alert subscription {args.subscription_id} removed")
        elif args.action == "test":
            owner = f"cli-{socket.gethostname()}-{os.getpid()}"
            result = await service.send_test(db, settings, args.subscription_id, owner)
            print(f"test delivery {result['delivery_id']}: {result['state']}")
            return 0 if result["state"] == "sent" else 1
        else:
            entries = await store.log(db, args.subscription_id)
            if args.json:
                print(json.dumps(entries, default=str))
            for d in [] if args.json else entries:
                print(
                    f"{d['delivery_id']:>5}  {d['state']:<7} {'test ' if d['test'] else ''}"
                    f"{d['events']} events, {d['attempts']} attempts, {d['created_at']}"
                    f"{'  ' + d['last_error'] if d['last_error'] else ''}"
                )
    return 0
