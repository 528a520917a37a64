"""A suite's checkpoints through the engine into the results store: serially, on a worker pool, or on Dask. The
names that lived in the old ``lexprobe.sweep`` module are re-exported."""

from lexprobe.sweep.run import extract, run_fingerprint

__all__ = ["extract", "run_fingerprint"]
