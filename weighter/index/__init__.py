"""Store + nearest-neighbour "like" retrieval (FAISS + SQLite). Not built yet: see issue 4."""
