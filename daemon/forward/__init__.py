"""Forwarding the local log to InfluxDB: a side task of the daemon when `[influx] url` is set (docs/architecture.md,
"Forwarding to InfluxDB"). `attach_forwarder(daemon)` plugs it in; `build_forwarder(config, store)` makes one
without a daemon (tests, benchmarks)."""

from jouled.daemon.forward.attach import attach_forwarder, build_forwarder, build_writer

__all__ = ["attach_forwarder", "build_forwarder", "build_writer"]
