//! routerd health and metrics over HTTP: /readiness, /liveness, Prometheus /metrics.
