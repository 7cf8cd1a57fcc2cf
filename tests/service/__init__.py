"""Tests of the systemd unit and `jouled service install|uninstall`."""
