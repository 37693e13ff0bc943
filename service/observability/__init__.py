"""Metrics, traces and logs: the API's and the worker's Prometheus metrics, OpenTelemetry spans and the
log format."""
