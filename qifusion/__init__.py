"""qifusion: accent-aware streaming speech recognition (Qifusion-Net, arXiv 2407.03026)."""

__version__ = "0.1.0"
