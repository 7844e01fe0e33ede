"""Data: dataset cards, sources, featurization caches and splits."""
