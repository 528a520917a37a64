"""Where measurements and finished stages are kept: the packed results store and the stage cache. The names that
lived in the old ``lexprobe.store`` module are re-exported."""

from lexprobe.store.results import ResultsStore, StoreConflict, Unit, load_results

__all__ = ["ResultsStore", "StoreConflict", "Unit", "load_results"]
