"""jouled: measure what machine-learning work costs in energy and carbon, and search architectures when the grid is clean."""

__version__ = "0.1.0"
