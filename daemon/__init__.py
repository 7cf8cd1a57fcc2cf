"""The sampling service: sources, sampler, marker recorder, embedded broker, systemd glue."""
