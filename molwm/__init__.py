"""molwm: multimodal scientific world models for drug discovery.

Modality encoders (molecular graphs, assay readouts, cell imaging) feed one
joint embedding space; a JEPA predictor forecasts masked modalities and
future cell states; every run is tracked in MLflow.
"""

__version__ = "0.1.0"
