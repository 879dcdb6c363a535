"""Discovered groups over a whole corpus (HDBSCAN). Not built yet: see issue 5."""
