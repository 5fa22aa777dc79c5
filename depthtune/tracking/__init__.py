"""MLflow side of depthtune: the tracking server a sweep talks to, runs, registry and loading."""
