"""Continuous scanning: watched regions scanned again when their provider has new imagery."""
