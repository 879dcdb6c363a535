"""Discovered groups over a whole corpus: HDBSCAN on the store's active slots (clusterer.py),
runs persisted in the store, assignment of new files, exports and a map (runs.py)."""

from weighter.cluster.clusterer import SlotClusterer, default_min_cluster_size
from weighter.cluster.runs import (assign_set, cluster_store, draw_map, export_csv, latest_run, run_result,
                                   run_summary)

__all__ = ["SlotClusterer", "assign_set", "cluster_store", "default_min_cluster_size", "draw_map", "export_csv",
           "latest_run", "run_result", "run_summary"]
