"""The MLflow client of depthtune: runs, the outage-proof writer, the registry, loading (servers: depthtune.serve)."""
