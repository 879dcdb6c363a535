"""Audio -> per-file embedding sets (the Weighter model). Not built yet: see issue 3."""
