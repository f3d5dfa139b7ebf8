"""The Pi's own shutdown policy: settings, the sans-IO state machine, and its runner."""
