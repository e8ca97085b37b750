r"""The one sampler loop: every fixed-grid sampler is a step function run by :func:`run_steps`.

A step function ``step(sde, score_fn, x, t, s, generator) -> x`` moves the state from time
``t`` to ``s < t``. :func:`run_steps` walks the grid and offers two hooks at every step:

* ``replace(info) -> x``: may replace the state after the step (what inpainting,
  colorization and projections onto measurements use). The final denoising step of
  :func:`scoresde.sample` goes through it too, with ``info.s = 0``.
* ``callback(info)``: observes the step.

Both receive a :class:`StepInfo`: the step index, the times, the state (after ``replace``
for the callback), the rows of the whole sample batch this call holds (``sample`` may run
in several batches), and for the callback the denoised estimate
:math:`\hat x_0 = (x_t + \sigma_t^2 s_\theta(x_t, t))/\alpha_t` from the step's first score
evaluation (no extra network call), e.g. to record a trajectory or draw progress pictures.

A task plugs into the hooks; it never copies a loop, and a new sampler gets every task.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from torch import Tensor

from ..integrators import _progress
from ..score import x0_from_score
from ..sde import SDE, ScoreFn

StepFn = Callable[..., Tensor]


@dataclass(frozen=True)
class StepInfo:
    """The state after step ``index`` (from ``t`` to ``s``) of rows ``rows`` of the sample batch."""

    index: int
    t: float
    s: float
    x: Tensor
    rows: slice
    x0_hat: Tensor | None = None


Callback = Callable[[StepInfo], None]
ReplaceFn = Callable[[StepInfo], Tensor]


class _FirstScore:
    """A score function that remembers its first evaluation of each step (for the denoised estimate)."""

    def __init__(self, sde: SDE, score_fn: ScoreFn) -> None:
        self.sde, self.score_fn = sde, score_fn
        self.first: tuple[Tensor, Tensor, Tensor] | None = None

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        score = self.score_fn(x, t)
        if self.first is None:
            self.first = (x, t, score)
        return score

    def take_x0_hat(self) -> Tensor | None:
        if self.first is None:
            return None
        x, t, score = self.first
        self.first = None
        return x0_from_score(self.sde, x, t, score)


def steps_of(ts: Sequence[float], progress: bool, desc: str = "sampling") -> Iterable[tuple[float, float]]:
    """Consecutive ``(t, s)`` pairs of a decreasing grid, optionally under a tqdm bar."""
    return _progress(list(itertools.pairwise(ts)), progress, desc)


def run_steps(
    step: StepFn,
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    ts: Sequence[float],
    generator: object = None,
    progress: bool = False,
    callback: Callback | None = None,
    replace: ReplaceFn | None = None,
    rows: slice | None = None,
) -> Tensor:
    """Run ``step`` over each ``(t, s)`` of the decreasing grid ``ts``, with the hooks (see the module docstring).

    ``rows``: which rows of the whole sample batch ``x`` holds (default all of them).
    """
    rows = slice(0, x.shape[0]) if rows is None else rows
    recorder = _FirstScore(sde, score_fn) if callback is not None else None
    score = recorder if recorder is not None else score_fn
    for index, (t, s) in enumerate(steps_of(ts, progress)):
        x = step(sde, score, x, t, s, generator)
        if replace is not None:
            x = replace(StepInfo(index, t, s, x, rows))
        if recorder is not None:
            callback(StepInfo(index, t, s, x, rows, recorder.take_x0_hat()))
    return x
