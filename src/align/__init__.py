"""align: explanation-guided learning with ALIGN (arXiv 2511.06944) and its baselines."""

__version__ = "0.1.0"
