"""Tests of the daemon's Prometheus endpoint (daemon/prometheus.py)."""
