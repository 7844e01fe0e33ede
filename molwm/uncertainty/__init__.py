"""Uncertainty of fine-tuned predictions: calibration on validation rows, the applicability domain, and the
fine-tune's fitting and reporting of both."""
