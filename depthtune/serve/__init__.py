"""Services depthtune runs itself: the ``mlflow server``, the ``depthtune serve`` daemon and a private PostgreSQL."""
