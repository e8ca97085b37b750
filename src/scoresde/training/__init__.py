"""Training: the loop every objective shares and the weight averages it keeps."""

from .ema import EMA

__all__ = ["EMA"]
