r"""The adaptive reverse-SDE solver of Jolicoeur-Martineau et al. (2021), "Gotta go fast when generating
data with score-based models" (their Algorithm 1), with per-sample step-size control.

Write the reverse SDE as :math:`dx = r(x,t)\,dt + g(t)\,d\bar w` with :math:`r = f - g^2 s_\theta`, integrated
backwards from ``T`` to ``eps``. From time :math:`t` with step :math:`h > 0` each iteration draws one
:math:`z \sim N(0, I)` and forms

.. math::
    x' &= x - h\,r(x, t) + \sqrt h\,g(t)\,z \qquad\text{(Euler-Maruyama)}\\
    \tilde x &= x - h\,r(x', t-h) + \sqrt h\,g(t-h)\,z \qquad\text{(the same } z)\\
    x'' &= \tfrac12 (x' + \tilde x) \qquad\text{(stochastic improved Euler)}

The tolerance is elementwise, :math:`\delta = \max(\epsilon_{abs}, \epsilon_{rel}\max(|x'|, |x'_{prev}|))`
with :math:`x'_{prev}` the :math:`x'` of the last accepted step (the start state before the first), and
the scaled error is :math:`E = \|(x' - x'')/\delta\|_2 / \sqrt{n}` over a sample's ``n`` entries. The step
is accepted when :math:`E \le 1`: then :math:`x \leftarrow x''`, :math:`t \leftarrow t - h`,
:math:`x'_{prev} \leftarrow x'`. Accepted or not, the next step is
:math:`h \leftarrow \min(t - \epsilon,\ \theta\,h\,E^{-r})` (safety :math:`\theta`, exponent :math:`r`).

Every sample has its own time and step size, so a sample's path depends only on its own noise: with a
:class:`scoresde.noise.SampleNoise` the results do not depend on batching.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_number, expand_to, randn_like
from ..noise import SampleNoise
from ..sde import SDE, ScoreFn
from .spec import POSITIVE, TOLERANCES, OptionRule, SamplerSpec, declare


@declare(SamplerSpec(adaptive=lambda options: True,
                    rules={**TOLERANCES, "h_init": POSITIVE, "exponent": POSITIVE,
                           "safety": OptionRule(check=lambda v: 0 < v <= 1, message="must be in (0, 1]"),
                           "max_steps": OptionRule(check=lambda v: v >= 1,
                                                   message="must be a positive integer")}))  # fmt: skip
def adaptive_sde(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    ts: Sequence[float],
    *,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    max_steps: int = 10_000,
    generator: torch.Generator | SampleNoise | None = None,
    progress: bool = False,
    rows: slice | None = None,
) -> Tensor:
    r"""Integrate the reverse SDE from ``ts[0]`` to ``ts[-1]`` with adaptive steps (see the module docstring).

    Args:
        rtol, atol: the relative and absolute tolerances :math:`\epsilon_{rel}`, :math:`\epsilon_{abs}`
            (the paper's defaults: 0.05 and 0.0078, about 1/128 for data in [-1, 1]).
        h_init: the first step size (capped at the time span).
        safety: the safety factor :math:`\theta` in (0, 1].
        exponent: :math:`r` of the step update :math:`h \leftarrow \theta h E^{-r}`.
        max_steps: the most iterations (accepted or rejected steps) before a ``RuntimeError``.
        generator: a ``torch.Generator`` or a :class:`~scoresde.noise.SampleNoise`. Every iteration makes
            one draw for the whole batch (finished rows included), so sample ``i``'s ``k``-th iteration
            uses draw ``k`` of its stream in any batch; afterwards a ``SampleNoise`` stands at
            ``max_steps`` draws past its start, whatever the batch needed.
        progress: a tqdm bar over the time of the slowest sample (one host sync per iteration).
        rows: accepted for uniformity with the other samplers; unused.

    Every iteration evaluates the score twice (rejected steps included). The only host sync per
    iteration is the test for unfinished samples. A sample whose error is not finite or whose step
    underflows stops, and a ``FloatingPointError`` is raised at the end.
    """
    rtol = check_number("rtol", rtol, 0.0, strict=True)
    atol = check_number("atol", atol, 0.0, strict=True)
    h_init = check_number("h_init", h_init, 0.0, strict=True)
    safety = check_number("safety", safety, 0.0, strict=True)
    if safety > 1.0:
        raise ValueError(f"safety must be a number in (0, 1], got {safety!r}")
    exponent = check_number("exponent", exponent, 0.0, strict=True)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    t0, t1 = float(ts[0]), float(ts[-1])
    if not t0 > t1:
        raise ValueError(f"the reverse SDE runs from ts[0] down to ts[-1], got {t0} -> {t1}")
    reverse = sde.reverse(score_fn)
    batch, dtype = x.shape[0], x.dtype
    tdtype = torch.float32 if x.device.type == "mps" else torch.float64
    tiny = 8 * torch.finfo(tdtype).eps * max(1.0, abs(t0))  # a step that no longer moves t
    start_draws = generator.draws if isinstance(generator, SampleNoise) else 0

    x = x.clone()
    x_prev = x.clone()  # x' of the last accepted step
    t = torch.full((batch,), t0, dtype=tdtype, device=x.device)
    h = torch.full_like(t, min(h_init, t0 - t1))
    done = torch.zeros(batch, dtype=torch.bool, device=x.device)
    failed = torch.zeros_like(done)
    bar = _bar(t0 - t1, progress)
    for _ in range(max_steps):
        active = (~done).nonzero().squeeze(1)  # the termination test: the one host sync per iteration
        if active.numel() == 0:
            break
        z = randn_like(x, generator)  # the whole batch draws, so each stream's k-th draw is its k-th step
        full = active.numel() == batch
        if full:
            ta, ha, xa, pa, za = t, h, x, x_prev, z
        else:
            ta, ha, xa, pa, za = t[active], h[active], x[active], x_prev[active], z[active]
        last = ha >= (ta - t1) * (1 - 1e-12)
        s = torch.where(last, torch.full_like(ta, t1), ta - ha)  # the time after the step
        hx, root = expand_to(ha.to(dtype), xa), expand_to(ha.sqrt().to(dtype), xa)
        drift, g = reverse.sde(xa, ta.to(dtype))
        x1 = xa - hx * drift + root * expand_to(g, xa) * za
        drift, g = reverse.sde(x1, s.to(dtype))
        x2 = 0.5 * (x1 + xa - hx * drift + root * expand_to(g, xa) * za)
        delta = (rtol * torch.maximum(x1.abs(), pa.abs())).clamp_min(atol)
        err = ((x1 - x2) / delta).reshape(xa.shape[0], -1).pow(2).mean(1).sqrt().to(tdtype)
        finite = torch.isfinite(err)
        accept = finite & (err <= 1.0)
        t_new = torch.where(accept, s, ta)
        finished = accept & last
        h_new = torch.minimum(safety * ha * err.clamp_min(1e-10) ** -exponent, t_new - t1)
        stuck = ~finite | (~finished & (h_new < tiny))
        acc = expand_to(accept, xa)
        x_new, p_new = torch.where(acc, x2, xa), torch.where(acc, x1, pa)
        if full:
            t, h, x, x_prev, done, failed = t_new, h_new, x_new, p_new, finished | stuck, stuck
        else:
            t[active], h[active], x[active], x_prev[active] = t_new, h_new, x_new, p_new
            done[active], failed[active] = finished | stuck, stuck
        if bar is not None:
            bar.update(max(0.0, (t0 - t1) - float((t - t1).max()) - bar.n))
    else:
        raise RuntimeError(
            f"adaptive_sde did not reach t={t1:g} within max_steps={max_steps} iterations; "
            "loosen rtol/atol or raise max_steps"
        )
    if bar is not None:
        bar.close()
    n_failed = int(failed.sum())
    if n_failed:
        raise FloatingPointError(
            f"adaptive_sde stopped {n_failed} sample(s) early: a non-finite error estimate (NaN or inf in the "
            "score or the state) or a step size underflow"
        )
    if isinstance(generator, SampleNoise):
        generator.draws = start_draws + max_steps  # the same position whatever this batch needed
    return x


def _bar(span: float, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=span, desc="adaptive sde", unit="t", leave=False,
                bar_format="{l_bar}{bar}| t {n:.3f}/{total:.3f}")  # fmt: skip
