"""Readers for real data layouts (JUMP load_data CSV, CellProfiler profiles, Tox21-style tables)."""
