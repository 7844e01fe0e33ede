"""Property prediction: heads, metrics, plots."""
