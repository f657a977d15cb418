"""Training on Lightning: the module, checkpoints, configuration and the fit/test entry points."""
