"""napari-pathreview: review deep models on pathology slides in napari."""

__version__ = "0.1.0"
