r"""Time grids optimised for one model, sampler and NFE budget, and their files.

:func:`optimize_grid` searches the interior times of a grid so that a deterministic sampler
lands where the probability-flow ODE lands. It draws ``n`` prior samples, solves the ODE
from them accurately once (UniPC-3 on a fine log-SNR grid: the reference), and minimises the
mean distance (per-sample RMS over the dimensions) between the sampler's denoised outputs on
the candidate grid and the reference outputs, from the same starting points:

.. math:: J(t_1, \dots, t_{K-1}) = \frac{1}{n}\sum_i \frac{1}{\sqrt D}
          \|\text{sampler}(x_T^{(i)}; T, t_1, \dots, t_{K-1}, \epsilon) - \text{ODE}(x_T^{(i)})\|.

(The mean of distances, not of squared distances, so that the few starting points that the
sampler sends to another mode do not dominate the search; on the mixture it met the
distribution criteria for every seed tried, the median and the mean square for some.)

The search is a pattern search over the log-SNR of each interior time (coordinate moves
towards a neighbour by a fraction of the gap, halved when no move helps), started from the
``log_snr`` grid. It needs ``K`` evaluations of the model per trial on ``n`` samples, so with
the defaults it costs a few hundred batched forward passes: minutes on a CPU for a small
network. The spirit is that of "Align Your Steps" (Sabour et al. 2024), with the terminal
error against an accurate solve as the objective instead of a KL bound.

A grid is saved as JSON (:func:`save_grid`) under a checkpoint's run directory
(``<run>/grids/<name>.json``) and read back by name or path (:func:`load_grid`); the CLI's
``--grid`` takes either.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .._checks import check_eps, check_shape
from ..score import takes_model
from ..sde import SDE, ScoreFn

REFERENCE_NFE = 200
"""Evaluations of the reference solve (UniPC order 3 on the log-SNR grid)."""
DETERMINISTIC = {"dpm_solver++", "dpm_solver", "unipc", "edm_heun", "ddim", "ode"}
GRID_SUFFIX = ".json"
SCAN = 5
"""The first phase scans SCAN x SCAN pairs of ends of the evenly spaced interior."""
MIN_GAP = 0.1
"""Neighbouring times stay at least this fraction of the even log-SNR spacing apart."""


def _is_deterministic(sampler: str, options: dict[str, Any]) -> bool:
    if sampler not in DETERMINISTIC:
        return False
    if sampler == "edm_heun":
        return float(options.get("churn", 0.0)) == 0.0
    if sampler == "ddim":
        return float(options.get("eta", 0.0)) == 0.0
    if sampler == "ode":
        return options.get("method", "rk45") != "rk45"
    return True


def check_optimize_arguments(sampler: str, steps: int, n: int, options: dict[str, Any], sweeps: int = 6,
                             reference_nfe: int = REFERENCE_NFE) -> None:  # fmt: skip
    """The checks of :func:`optimize_grid`'s arguments (before any work; the CLI runs them before loading)."""
    from . import SAMPLERS, budget_steps, evals_per_step, is_adaptive, sampler_options

    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(map(repr, SAMPLERS))}")
    unknown = sorted(set(options) - set(sampler_options(sampler)))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for sampler {sampler!r}")
    if is_adaptive(sampler, options):
        raise ValueError(f"{sampler!r} with {options or 'its defaults'} picks its own steps: it has no grid to tune")
    if not _is_deterministic(sampler, options):
        raise ValueError(f"optimize_grid needs a deterministic sampler (the objective compares with the ODE's "
                         f"solution); {sampler!r} with {options or 'its defaults'} draws noise")  # fmt: skip
    for name, value, least in (("n", n, 2), ("sweeps", sweeps, 0), ("reference_nfe", reference_nfe, 10)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if evals_per_step(sampler, options) is not None:
        budget_steps(sampler, steps, True, options)  # the least budget of this solver


@torch.no_grad()
@takes_model
def optimize_grid(
    sde: SDE,
    score_fn: ScoreFn,
    steps: int,
    *,
    shape: Sequence[int],
    sampler: str = "dpm_solver++",
    n: int = 256,
    eps: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    sweeps: int = 6,
    reference_nfe: int = REFERENCE_NFE,
    batch_size: int | None = None,
    report: Callable[[str], None] | None = None,
    **options: Any,
) -> list[float]:
    """Optimise the grid of ``sampler`` at ``steps`` (as :func:`scoresde.sample` counts them) for ``score_fn``.

    Args:
        sde, score_fn: the model.
        steps: the budget, as ``sample`` takes it (the NFE for the fast solvers).
        shape: the shape of one sample (without the batch dimension).
        sampler, options: a deterministic sampler of :data:`~scoresde.sampling.SAMPLERS` and its
            options (the grid is tuned for them).
        n: starting points of the objective; generator: draws them.
        eps: end time (default: ``sample``'s).
        sweeps: passes of the pattern search over the interior times.
        reference_nfe: NFE of the reference solve.
        report: called with a line of progress after each sweep (e.g. ``print``).

    Returns:
        the optimised grid, a decreasing list of times from ``T`` to ``eps`` usable as ``grid=``.
    """
    from . import default_eps, sample

    check_optimize_arguments(sampler, steps, n, options, sweeps, reference_nfe)
    shape = tuple(check_shape((n, *shape)))
    eps = check_eps(default_eps(sde) if eps is None else eps, sde.T)
    common = {"device": device, "dtype": dtype, "batch_size": batch_size}
    start = sde.prior_sampling(shape, generator=generator, device=device or "cpu", dtype=dtype or torch.float32)
    # the grid the sampler would use for this budget: its size is what we optimise
    initial = _initial_grid(sde, sampler, steps, eps, options)
    if len(initial) < 3:
        return initial
    reference = sample(sde, score_fn, None, sampler="unipc", steps=reference_nfe, grid="log_snr", eps=eps,
                       x_init=start, order=3, **common)  # fmt: skip
    schedule = sde.schedule
    lam = [schedule.log_snr(t) for t in initial]
    inner = len(lam) - 2
    min_gap = MIN_GAP * (lam[-1] - lam[0]) / (inner + 1)

    def objective(lams: list[float]) -> float:
        if any(b - a < min_gap for a, b in itertools.pairwise(lams)):
            return math.inf
        ts = [sde.T, *(schedule.t_from_log_snr(v) for v in lams[1:-1]), eps]
        x = sample(sde, score_fn, None, sampler=sampler, grid=ts, x_init=start, **common, **options)
        err = float((x.double() - reference.double()).flatten(1).pow(2).mean(1).sqrt().mean())
        return err if math.isfinite(err) else math.inf

    def spread(a: float, b: float) -> list[float]:
        if inner == 1:
            return [lam[0], 0.5 * (a + b), lam[-1]]
        return [lam[0], *(a + (b - a) * i / (inner - 1) for i in range(inner)), lam[-1]]

    best = first = objective(lam)
    # phase 1: the interior points spread evenly in log-SNR over [a, b]: a coarse scan of the two
    # ends (a in the noisier half, b in the cleaner half), then a pattern search around the best
    mid = 0.5 * (lam[0] + lam[-1])
    ends = [lam[1], lam[-2]]
    for i in range(SCAN):
        for j in range(SCAN):
            a = lam[0] + (mid - lam[0]) * (i + 0.5) / SCAN
            b = mid + (lam[-1] - mid) * (j + 0.5) / SCAN
            value = objective(spread(a, b))
            if value < best:
                ends, best = [a, b], value
    size = [0.5 * (mid - lam[0]) / SCAN] * 2
    for _ in range(sweeps * 2):
        for i in (0, 1):
            for direction in (+1, -1):
                trial = list(ends)
                trial[i] += direction * size[i]
                value = objective(spread(*trial)) if trial[0] <= trial[1] else math.inf
                if value < best:
                    ends, best = trial, value
                    break
            else:
                size[i] *= 0.5
    lam = spread(*ends) if best < first else lam
    if report is not None:
        report(f"even log-SNR spacing over [{ends[0]:.2f}, {ends[1]:.2f}]: mean RMS error {best:.4g} "
               f"(log_snr grid {first:.4g})")  # fmt: skip
    # phase 2: each interior point alone
    lam, best = refine_points(lam, objective, best, sweeps, report, "mean RMS error")
    return [sde.T, *(schedule.t_from_log_snr(v) for v in lam[1:-1]), eps]


def refine_points(
    lam: list[float],
    objective: Callable[[list[float]], float],
    best: float,
    sweeps: int,
    report: Callable[[str], None] | None = None,
    what: str = "objective",
) -> tuple[list[float], float]:
    """Pattern search over the interior points of ``lam`` (its ends stay): each point in turn moves towards a
    neighbour by a fraction of the gap (0.3 at first, halved after a point finds no better move), keeping a move as
    soon as it lowers ``objective``; ``sweeps`` passes. ``best`` is ``objective(lam)``. Returns the best points
    and their value."""
    fractions = [0.3] * len(lam)
    for sweep in range(sweeps):
        for i in range(1, len(lam) - 1):
            for direction in (+1, -1):
                gap = (lam[i + 1] - lam[i]) if direction > 0 else (lam[i] - lam[i - 1])
                trial = list(lam)
                trial[i] = lam[i] + direction * fractions[i] * gap
                value = objective(trial)
                if value < best:
                    lam, best = trial, value
                    break
            else:
                fractions[i] *= 0.5
        if report is not None:
            report(f"sweep {sweep + 1}/{sweeps}: {what} {best:.4g}")
    return lam, best


def _initial_grid(sde: SDE, sampler: str, steps: int, eps: float, options: dict[str, Any]) -> list[float]:
    """The ``log_snr`` grid ``sample`` builds for this sampler and budget."""
    from . import budget_steps, evals_per_step, time_grid

    if evals_per_step(sampler, options) is None:
        return time_grid(sde, steps, eps, "log_snr")
    return time_grid(sde, budget_steps(sampler, steps, True, options)[0], eps, "log_snr")


# -- grid files ----------------------------------------------------------------------------------
def grid_dir(checkpoint: str | Path) -> Path:
    """Where the grids of a checkpoint's run live: ``<run>/grids`` (``<run>`` holds ``checkpoints/``)."""
    path = Path(checkpoint)
    folder = path if path.is_dir() else path.parent
    run = folder.parent if folder.name == "checkpoints" else folder
    return run / "grids"


def save_grid(path: str | Path, times: Sequence[float], info: dict[str, Any]) -> Path:
    """Write a grid and what it was made for as JSON (refuses to overwrite an existing file)."""
    from ..plotting import atomic_write

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another --name or remove it")
    text = json.dumps({"times": [float(t) for t in times], **info}, indent=2) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))  # a failed write leaves no file behind


def load_grid(name_or_path: str | Path, checkpoint: str | Path | None = None) -> tuple[list[float], dict[str, Any]]:
    """Read a grid file by path, or by name from the checkpoint's run (``<run>/grids/<name>.json``)."""
    text = str(name_or_path)
    path = Path(text)
    if not path.is_file() and checkpoint is not None and "/" not in text:
        path = grid_dir(checkpoint) / (text if text.endswith(GRID_SUFFIX) else text + GRID_SUFFIX)
    if not path.is_file():
        where = f", nor a grid saved in {grid_dir(checkpoint)}" if checkpoint is not None else ""
        raise FileNotFoundError(f"no grid {text!r}: not a grid kind (uniform, quadratic, log_snr, karras), "
                                f"not a file{where}")  # fmt: skip
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data["times"], list):
            raise TypeError("'times' must be a list of numbers")
        times = [float(t) for t in data["times"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a grid file (a JSON object with a 'times' list): {err}") from None
    return times, {k: v for k, v in data.items() if k != "times"}


def grid_info(sde: SDE, sampler: str, steps: int, options: dict[str, Any], n: int, error: float | None = None,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The record stored beside a grid's times."""
    return {"sde": repr(sde), "sampler": sampler, "steps": steps, "options": options, "n": n,
            **({"rms_error": error} if error is not None else {}), **(extra or {})}  # fmt: skip


__all__ = ["grid_dir", "grid_info", "load_grid", "optimize_grid", "save_grid"]
