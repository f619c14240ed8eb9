"""UnStar Studio: make a local LLM forget one fact with UNSTAR (arXiv 2410.17050)."""

__version__ = "0.1.0"
