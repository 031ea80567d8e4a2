"""Telemetry of the services: Prometheus metrics and structured logs."""
