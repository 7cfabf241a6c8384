"""What an operator watches an instance by: Prometheus metrics (`metrics`), the
request id and JSON log lines (`logs`), and the readiness probe (`ready`)."""
