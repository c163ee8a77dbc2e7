"""exchangectl: control a twisted-exchange cluster (supervisord + Grenache)."""
