"""nutups: a NUT-compatible driver and server for Geekworm X120X Raspberry Pi UPS HATs."""

__version__ = "0.1.0"
