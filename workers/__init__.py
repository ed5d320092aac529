"""RQ jobs, the worker entry point and the relay."""
