"""Background work: RQ jobs (thin) and the worker process."""
