"""Ray Tune sweeps: the config, the plan the driver settles, the driver, the trials and the results."""
