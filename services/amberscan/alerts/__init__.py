"""Alerts of watched regions: subscriptions, events, deliveries (issue 30)."""
