"""Training: the one loop every objective shares (:func:`fit`), how it runs (:class:`FitOptions`) and the weight
averages it keeps (:class:`EMA`, :class:`PostHocEMA` and the post-hoc reconstruction)."""

from .ema import EMA, PostHocEMA, reconstruct_posthoc, save_posthoc_checkpoint, sigma_rel_to_gamma
from .loop import Objective, checkpoint_blocks, fit
from .options import PRECISIONS, FitOptions, check_fit_options, fit_options

__all__ = [
    "EMA",
    "PRECISIONS",
    "FitOptions",
    "Objective",
    "PostHocEMA",
    "check_fit_options",
    "checkpoint_blocks",
    "fit",
    "fit_options",
    "reconstruct_posthoc",
    "save_posthoc_checkpoint",
    "sigma_rel_to_gamma",
]
