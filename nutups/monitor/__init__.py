"""Watching the UPSes of other NUT servers as a NUT client (upsmon, PeaNUT) does."""
