"""Screening past one machine: ``molwm query --engine ray`` and neighbour search through a vector index.

* :mod:`molwm.screening.shards` plans the input into blocks (one output Parquet shard each) and keeps the
  manifest that says which shards are complete, so a killed job resumes where it stopped.
* :mod:`molwm.screening.engine_ray` runs the blocks on a Ray cluster (local or existing): each worker
  holds the model once and writes its shards atomically.
* :mod:`molwm.screening.index` builds, stores and searches an approximate (or, for small sets, exact)
  nearest-neighbour index of a reference set's embeddings, tied to the model that made them.

Ray, FAISS and usearch come with the optional ``scale`` extra; nothing here imports them at module level,
so the core install never needs them.
"""
