"""Imagery: where a scan tile's pixels come from, its providers and their pure rules."""
