"""Package data: the systemd unit, the RAPL tmpfiles rule and the example configs (read with importlib.resources)."""
