"""Knowing the battery: its capacity, resistance and wear, learned from the outages it lives through."""
