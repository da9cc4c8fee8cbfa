"""explorer: the training core of the deep-learning phenomena explorer (never imports streamlit)."""

__version__ = "0.1.0"
