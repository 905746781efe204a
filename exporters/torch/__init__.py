"""IR -> PyTorch."""
