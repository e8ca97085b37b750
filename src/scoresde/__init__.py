"""scoresde: score-based generative modeling through stochastic differential equations.

The continuous-time framework of Song et al. (ICLR 2021) in plain PyTorch: forward
SDEs with closed-form kernels, score parameterizations, every sampler of the paper,
and exact likelihoods through the probability-flow ODE; the paper's released checkpoints
load with :func:`load_official` / :func:`convert_official`.
"""

from . import integrators, operators, sampling, toy
from .checkpoint import Checkpoint
from .guidance import classifier_free_guided, classifier_guided
from .inverse import colorize, inpaint, solve_inverse
from .likelihood import (
    bits_per_dim,
    bpd_from_logp,
    decode,
    dequantize,
    encode,
    interpolate,
    log_likelihood,
    optimize_likelihood_grid,
    slerp,
)
from .model import load
from .noise import SampleNoise
from .official import convert_official, load_official
from .sampling import default_eps, optimize_grid, sample, time_grid
from .schedule import Schedule
from .score import (
    CountedScore,
    ModelScore,
    ScoreModel,
    eps_from_score,
    output_from_score,
    score_from_output,
    x0_from_score,
)
from .sde import EDMSDE, SDE, VESDE, VPSDE, CosineVPSDE, LinearSDE, RectifiedFlow, ReverseSDE, ScoreFn, SubVPSDE

__version__ = "0.1.0"

__all__ = [
    "EDMSDE",
    "SDE",
    "VESDE",
    "VPSDE",
    "Checkpoint",
    "CosineVPSDE",
    "CountedScore",
    "LinearSDE",
    "ModelScore",
    "RectifiedFlow",
    "ReverseSDE",
    "SampleNoise",
    "Schedule",
    "ScoreFn",
    "ScoreModel",
    "SubVPSDE",
    "bits_per_dim",
    "bpd_from_logp",
    "classifier_free_guided",
    "classifier_guided",
    "colorize",
    "convert_official",
    "decode",
    "default_eps",
    "dequantize",
    "encode",
    "eps_from_score",
    "inpaint",
    "integrators",
    "interpolate",
    "load",
    "load_official",
    "log_likelihood",
    "operators",
    "optimize_grid",
    "optimize_likelihood_grid",
    "output_from_score",
    "sample",
    "sampling",
    "score_from_output",
    "slerp",
    "solve_inverse",
    "time_grid",
    "toy",
    "x0_from_score",
]
