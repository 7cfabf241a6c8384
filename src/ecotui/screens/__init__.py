"""The dashboard's screens: clusters (home), cluster, logs, account and help."""
