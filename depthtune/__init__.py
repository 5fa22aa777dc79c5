"""depthtune."""
