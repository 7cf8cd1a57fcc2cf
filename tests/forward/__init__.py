"""Tests of the InfluxDB forwarder and the line-protocol encoding."""
