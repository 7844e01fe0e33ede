"""Judging models and embeddings: metrics, plots, probes on frozen embeddings (during pretraining, on the
lab's ground truth), retrieval, profile mAP and CellProfiler-style features."""
