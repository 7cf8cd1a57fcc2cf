"""Tests and hardware fakes for the power sources (nvml shim, powercap tree, fake nvidia-smi, VISA meters)."""
