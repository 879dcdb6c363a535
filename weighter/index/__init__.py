"""Store + nearest-neighbour "like" retrieval: SQLite (files, slots) + FAISS (active slots)."""

from weighter.index.build import add_files, remove_files
from weighter.index.query import Match, matches_json, query_many, query_store
from weighter.index.results import AddResult, ApplyResult, RemoveResult, StoreInfo
from weighter.index.store import Store, StoreError, content_hash

__all__ = ["AddResult", "ApplyResult", "Match", "RemoveResult", "Store", "StoreError", "StoreInfo", "add_files",
           "content_hash", "matches_json", "query_many", "query_store", "remove_files"]
