"""Stand-ins for the outside world that the example agents talk to under ``corral run``."""
