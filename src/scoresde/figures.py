r"""The six figures of the paper's walkthrough, computed exactly by the library.

Each figure is computed (:func:`forward_clouds`, :func:`score_field`, :func:`variances`,
:func:`same_marginals`, :func:`corrector_relaxation`, :func:`guided_paths`) from the 2-D Gaussian
mixture of :func:`scoresde.toy.demo_mixture`, whose score, density and noisy classifier are known in
closed form under every linear process, and from the library's own SDEs, samplers, corrector and
guidance; then drawn (:func:`render`, matplotlib) as a PNG and, where the walkthrough animates it
(time, noise level, corrector steps), an animated GIF. ``scoresde figures --out DIR`` writes them all.

1. ``forward_sde``: the forward SDE carries the three clusters into the prior; one particle's
   Euler-Maruyama path on top.
2. ``score_field``: :math:`\nabla_x \log p_t(x)` as arrows over the noised density at four noise levels.
3. ``variances``: the variance :math:`\alpha(t)^2 + \sigma(t)^2` of unit-variance data under VE, VP, sub-VP.
4. ``same_marginals``: reverse-SDE and probability-flow ODE paths from the same prior draws.
5. ``corrector``: Langevin corrector steps relaxing a too-tight cloud onto :math:`p_t`.
6. ``guidance``: classifier guidance with the exact noisy classifier funnelling particles to one class.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .guidance import classifier_guided
from .sampling import StepInfo, sample
from .sampling.sde_samplers import langevin_corrector
from .sde import SDE, VESDE, VPSDE, SubVPSDE
from .toy import GaussianMixture, demo_mixture

AMBER, TEAL, GREY = "#e0a030", "#1f8a8a", "#9a9a9a"
CLASS_COLOURS = ("#d1495b", "#2e86ab", "#66a182")
LIMITS = (-5.0, 5.0)
ARROW_SATURATION = 1.5  # |score| at which the score field's arrows reach three quarters of their longest


@dataclass
class Figure:
    """What one figure computed: ``data`` (arrays, for tests and for drawing) and its title and caption."""

    name: str
    title: str
    caption: str
    data: dict = field(default_factory=dict)


# -- 1. the forward SDE ------------------------------------------------------------------------------------------------
def forward_clouds(mixture: GaussianMixture, sde: SDE, times: Sequence[float], n: int = 2000, path_steps: int = 500,
                   seed: int = 0) -> Figure:  # fmt: skip
    """The data pushed forward to each time through the exact kernel :math:`x_t = \\alpha(t) x_0 + \\sigma(t) z`,
    and one particle's Euler-Maruyama path :math:`x \\leftarrow x + f\\,dt + g\\sqrt{dt}\\,z` of the forward SDE."""
    gen = torch.Generator().manual_seed(seed)
    x0 = mixture.sample(n, generator=gen, dtype=torch.float64)
    z = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    clouds = []
    for t in times:
        alpha, sigma = sde.marginal_coeffs(float(t), x0)
        clouds.append((alpha[:, None] * x0 + sigma[:, None] * z).numpy())
    ts = np.linspace(0.0, sde.T, path_steps + 1)
    x = x0[:1].clone()
    path = [x[0].numpy().copy()]
    for t, s in itertools.pairwise(ts):
        drift, diffusion = sde.sde(x, torch.full((1,), float(t), dtype=torch.float64))
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        x = x + drift * (s - t) + diffusion[:, None] * math.sqrt(s - t) * noise
        path.append(x[0].numpy().copy())
    return Figure("forward_sde", "The forward SDE",
                  "The forward VP SDE carries the data (amber clusters) into the Gaussian prior as t runs from 0 to 1. "
                  "The grey line is one particle's own stochastic path: drift plus a random kick at every step.",
                  {"times": list(times), "clouds": clouds, "path_times": ts, "path": np.stack(path)})  # fmt: skip


# -- 2. the score field ------------------------------------------------------------------------------------------------
def score_field(mixture: GaussianMixture, sde: SDE, times: Sequence[float], points: int = 17) -> Figure:
    """The exact score :math:`\\nabla_x \\log p_t` on a ``points x points`` grid, and the noised density on a fine
    grid."""
    axis = torch.linspace(*LIMITS, points, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    fine = torch.linspace(*LIMITS, 160, dtype=torch.float64)
    fine_grid = torch.cartesian_prod(fine, fine)
    arrows, densities, sigmas = [], [], []
    for t in times:
        tt = torch.full((grid.shape[0],), float(t), dtype=torch.float64)
        arrows.append(mixture.score(grid, tt, sde).numpy())
        ft = torch.full((fine_grid.shape[0],), float(t), dtype=torch.float64)
        densities.append(mixture.log_prob(fine_grid, ft, sde).exp().reshape(160, 160).numpy())
        sigmas.append(sde.schedule.sigma(float(t)) / sde.schedule.alpha(float(t)))
    return Figure("score_field", "The score field",
                  "The score of the noised data points where the density (shaded) climbs fastest. At low noise it "
                  "aims firmly at the nearest cluster; at high noise the clusters blur and it points gently to the "
                  "centre.", {"times": list(times), "sigmas": sigmas, "grid": grid.numpy(), "arrows": arrows,
                              "fine": fine.numpy(), "densities": densities})  # fmt: skip


# -- 3. VE, VP and sub-VP --------------------------------------------------------------------------------------------
def variances(sdes: dict[str, SDE] | None = None, points: int = 200) -> Figure:
    """The variance :math:`\\alpha(t)^2 + \\sigma(t)^2` of :math:`x_t` for unit-variance data under each process."""
    sdes = sdes or {"VE": VESDE(sigma_min=0.01, sigma_max=50.0), "VP": VPSDE(), "sub-VP": SubVPSDE()}
    ts = np.linspace(1e-3, 1.0, points)
    curves = {}
    for name, sde in sdes.items():
        curves[name] = np.array([sde.schedule.alpha(float(t)) ** 2 + sde.schedule.sigma(float(t)) ** 2 for t in ts])
    return Figure("variances", "VE, VP and sub-VP",
                  "The variance of the noised data over time, for unit-variance data (log scale). VE explodes, VP "
                  "stays at 1, sub-VP dips below VP through the middle and returns to 1.",
                  {"times": ts, "curves": curves})  # fmt: skip


# -- 4. same marginals, different paths ------------------------------------------------------------------------------
def _trajectory(sde: SDE, score_fn, x_init: Tensor, sampler: str, steps: int, seed: int,
                **options) -> tuple[list[float], np.ndarray]:  # fmt: skip
    """The states after every step of a fixed-grid sampler from ``x_init`` (``[steps + 1, n, 2]``)."""
    times, states = [sde.T], [x_init.numpy().copy()]

    def record(info: StepInfo) -> None:
        times.append(info.s)
        states.append(info.x.numpy().copy())

    sample(sde, score_fn, None, sampler=sampler, steps=steps, x_init=x_init, denoise=False, callback=record,
           generator=torch.Generator().manual_seed(seed), **options)  # fmt: skip
    return times, np.stack(states)


def same_marginals(mixture: GaussianMixture, sde: SDE, n: int = 2000, steps: int = 200, seed: int = 0) -> Figure:
    """The reverse SDE (Euler-Maruyama) and the probability-flow ODE (Euler) from the same prior draws."""
    x_init = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    score = mixture.score_fn(sde)
    times, sde_states = _trajectory(sde, score, x_init, "euler_maruyama", steps, seed + 1)
    _, ode_states = _trajectory(sde, score, x_init, "euler_maruyama", steps, seed + 1, probability_flow=True)
    return Figure("same_marginals", "Same marginals, different paths",
                  "From the same prior draws, the reverse SDE (left) kicks every step and traces jagged paths; the "
                  "probability-flow ODE (right) is smooth. At every time the two clouds have the same distribution, "
                  "though no path matches.", {"times": times, "sde": sde_states, "ode": ode_states})  # fmt: skip


# -- 5. the corrector ------------------------------------------------------------------------------------------------
def corrector_relaxation(mixture: GaussianMixture, sde: SDE, t: float = 0.1,
                         counts: Sequence[int] = (0, 1, 3, 10, 30, 100), n: int = 2000, snr: float = 0.1,
                         shrink: float = 0.35, seed: int = 0) -> Figure:  # fmt: skip
    """A cloud at time ``t`` packed too tightly (each point pulled to its mode by ``shrink``), relaxed by ``M``
    Langevin corrector steps of the library (:func:`scoresde.sampling.langevin_corrector`) at ``t``."""
    gen = torch.Generator().manual_seed(seed)
    x0, labels = mixture.sample(n, generator=gen, dtype=torch.float64, return_labels=True)
    alpha, sigma = (float(c) for c in sde.marginal_coeffs(t, x0[:1]))
    target = alpha * x0 + sigma * torch.randn(x0.shape, generator=gen, dtype=torch.float64)  # exact p_t draws
    centre = alpha * mixture.means[labels]
    x = centre + shrink * (target - centre)
    score, clouds, done = mixture.score_fn(sde), {}, 0
    for m in sorted(counts):
        if m > done:
            x = langevin_corrector(sde, score, x, t, snr=snr, n_steps=m - done, generator=gen)
            done = m
        clouds[m] = x.numpy().copy()
    return Figure("corrector", "The corrector",
                  f"The amber cloud is the true noised density at t = {t}. The teal cloud left a predictor step too "
                  "tightly packed; each Langevin corrector step moves it along the score and adds calibrated noise, "
                  f"and after M steps (signal-to-noise ratio {snr}) it has relaxed onto the target.",
                  {"t": t, "counts": list(counts), "clouds": clouds, "target": target.numpy()})  # fmt: skip


# -- 6. controllable generation --------------------------------------------------------------------------------------
def guided_paths(mixture: GaussianMixture, sde: SDE, n: int = 300, steps: int = 200, scale: float = 1.0,
                 seed: int = 0) -> Figure:  # fmt: skip
    """Probability-flow ODE paths from the same prior draws: unguided, then guided to each class by the exact noisy
    classifier :math:`\\nabla_x \\log p_t(y \\mid x)` (:func:`scoresde.classifier_guided`)."""
    x_init = sde.prior_sampling((n, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    score, classifier = mixture.score_fn(sde), mixture.classifier_fn(sde)
    flow = {"probability_flow": True}
    runs = {None: _trajectory(sde, score, x_init, "euler_maruyama", steps, seed + 1, **flow)[1]}
    for k in range(mixture.n_components):
        guided = classifier_guided(score, classifier, k, scale)
        runs[k] = _trajectory(sde, guided, x_init, "euler_maruyama", steps, seed + 1, **flow)[1]
    return Figure("guidance", "Controllable generation",
                  "One unconditional score, the same prior draws, probability-flow paths. Without a class the "
                  "particles go to all three clusters; with a class, the gradient of the noisy classifier's "
                  "log-probability is added to the same score and funnels every particle to that cluster.",
                  {"runs": runs, "weights": mixture.weights.numpy()})  # fmt: skip


# -- drawing ---------------------------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "drawing the figures needs matplotlib: pip install 'scoresde[docs]' (or matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _square(ax, title: str = "") -> None:
    ax.set_xlim(*LIMITS)
    ax.set_ylim(*LIMITS)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


def _png(fig, path: Path) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _frame(fig):
    """A matplotlib figure as a palette image for a GIF (the figure is closed)."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    _pyplot().close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("P", palette=Image.ADAPTIVE)


def _gif(frames: list, path: Path, ms: int = 120) -> Path:
    """Frames (from :func:`_frame`) as an animated GIF that loops."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return path


def _draw_forward(fig: Figure, out: Path) -> list[Path]:
    plt = _pyplot()
    d = fig.data
    panels, axes = plt.subplots(1, len(d["times"]), figsize=(2.4 * len(d["times"]), 2.6))
    for ax, t, cloud in zip(axes, d["times"], d["clouds"], strict=True):
        ax.scatter(cloud[:, 0], cloud[:, 1], s=2, c=AMBER, alpha=0.5, linewidths=0)
        upto = d["path_times"] <= t + 1e-12
        ax.plot(d["path"][upto, 0], d["path"][upto, 1], c=GREY, lw=0.6)
        _square(ax, f"t = {t:.2f}")
    paths = [_png(panels, out / "forward_sde.png")]
    frames = []
    for t, cloud in zip(d["times"], d["clouds"], strict=True):
        frame, ax = plt.subplots(figsize=(3.2, 3.4))
        ax.scatter(cloud[:, 0], cloud[:, 1], s=2, c=AMBER, alpha=0.5, linewidths=0)
        upto = d["path_times"] <= t + 1e-12
        ax.plot(d["path"][upto, 0], d["path"][upto, 1], c=GREY, lw=0.6)
        _square(ax, f"forward SDE, t = {t:.2f}")
        frames.append(_frame(frame))
    return [*paths, _gif(frames, out / "forward_sde.gif")]


def _draw_score(fig: Figure, out: Path) -> list[Path]:
    plt = _pyplot()
    d = fig.data

    def panel(ax, i: int) -> None:
        fine = d["fine"]
        ax.imshow(d["densities"][i].T, origin="lower", extent=(fine[0], fine[-1], fine[0], fine[-1]), cmap="Oranges")
        arrows = d["arrows"][i]
        norm = np.linalg.norm(arrows, axis=1, keepdims=True)
        unit = arrows / np.maximum(norm, 1e-12)
        length = np.tanh(norm / ARROW_SATURATION)  # the direction exact; the length grows with |score|, then saturates
        ax.quiver(d["grid"][:, 0], d["grid"][:, 1], unit[:, 0] * length[:, 0], unit[:, 1] * length[:, 0],
                  color=TEAL, angles="xy", scale_units="xy", scale=1.8, width=0.006)  # fmt: skip
        _square(ax, f"noise level σ/α = {d['sigmas'][i]:.2f}")

    count = len(d["times"])
    panels, axes = plt.subplots(1, count, figsize=(2.8 * count, 3.0))
    for i, ax in enumerate(axes):
        panel(ax, i)
    frames = []
    for i in range(count):
        frame, ax = plt.subplots(figsize=(3.4, 3.6))
        panel(ax, i)
        frames.append(_frame(frame))
    return [_png(panels, out / "score_field.png"), _gif(frames + frames[-2:0:-1], out / "score_field.gif", ms=600)]


def _draw_variances(fig: Figure, out: Path) -> list[Path]:
    plt = _pyplot()
    d = fig.data
    panel, ax = plt.subplots(figsize=(5.2, 3.4))
    for (name, curve), colour in zip(d["curves"].items(), CLASS_COLOURS, strict=True):
        ax.plot(d["times"], curve, label=name, c=colour, lw=2)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("variance of x(t)")
    ax.axhline(1.0, c=GREY, lw=0.8, ls=":")
    ax.legend(frameon=False)
    ax.set_title("unit-variance data under VE, VP and sub-VP", fontsize=10)
    return [_png(panel, out / "variances.png")]


def _draw_paths(fig: Figure, out: Path, shown: int = 6) -> list[Path]:
    plt = _pyplot()
    d = fig.data
    times = np.asarray(d["times"])

    def panel(axes, upto: int) -> None:
        for ax, key, name in zip(axes, ("sde", "ode"), ("reverse SDE", "probability-flow ODE"), strict=True):
            states = d[key]
            ax.scatter(states[upto, :, 0], states[upto, :, 1], s=2, c=AMBER, alpha=0.5, linewidths=0)
            for j in range(shown):
                ax.plot(states[: upto + 1, j, 0], states[: upto + 1, j, 1], c=TEAL, lw=0.6, alpha=0.8)
            _square(ax, f"{name}, t = {times[upto]:.2f}")

    panels, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
    panel(axes, len(times) - 1)
    frames = []
    for upto in [*range(0, len(times), max(1, len(times) // 40)), len(times) - 1]:
        frame, axes = plt.subplots(1, 2, figsize=(6.4, 3.4))
        panel(axes, upto)
        frames.append(_frame(frame))
    return [_png(panels, out / "same_marginals.png"), _gif(frames, out / "same_marginals.gif")]


def _draw_corrector(fig: Figure, out: Path) -> list[Path]:
    plt = _pyplot()
    d = fig.data
    target = d["target"]

    def panel(ax, m: int) -> None:
        ax.scatter(target[:, 0], target[:, 1], s=3, c=AMBER, alpha=0.25, linewidths=0)
        cloud = d["clouds"][m]
        ax.scatter(cloud[:, 0], cloud[:, 1], s=2, c=TEAL, alpha=0.6, linewidths=0)
        _square(ax, f"M = {m} corrector step{'s' if m != 1 else ''}")

    counts = d["counts"]
    panels, axes = plt.subplots(1, len(counts), figsize=(2.6 * len(counts), 2.8))
    for ax, m in zip(axes, counts, strict=True):
        panel(ax, m)
    frames = []
    for m in counts:
        frame, ax = plt.subplots(figsize=(3.2, 3.4))
        panel(ax, m)
        frames.append(_frame(frame))
    return [_png(panels, out / "corrector.png"), _gif(frames, out / "corrector.gif", ms=700)]


def _draw_guidance(fig: Figure, out: Path, shown: int = 30) -> list[Path]:
    plt = _pyplot()
    runs = fig.data["runs"]
    panels, axes = plt.subplots(1, len(runs), figsize=(2.8 * len(runs), 3.0))
    for ax, (k, states) in zip(axes, runs.items(), strict=True):
        colour = GREY if k is None else CLASS_COLOURS[k]
        for j in range(shown):
            ax.plot(states[:, j, 0], states[:, j, 1], c=colour, lw=0.6, alpha=0.7)
        ax.scatter(states[-1, :, 0], states[-1, :, 1], s=4, c=colour, linewidths=0)
        ax.scatter(states[0, :shown, 0], states[0, :shown, 1], s=6, c=GREY, linewidths=0)
        _square(ax, "no class" if k is None else f"class {k}")
    return [_png(panels, out / "guidance.png")]


FIGURES: dict[str, tuple[Callable[[], Figure], Callable[[Figure, Path], list[Path]]]] = {
    "forward_sde": (lambda: forward_clouds(demo_mixture(), VPSDE(), [0.0, 0.05, 0.15, 0.3, 0.6, 1.0]), _draw_forward),
    "score_field": (
        lambda: score_field(demo_mixture(), VESDE(sigma_min=0.01, sigma_max=50.0), [0.3, 0.45, 0.55, 0.65]),
        _draw_score,
    ),
    "variances": (variances, _draw_variances),
    "same_marginals": (lambda: same_marginals(demo_mixture(), VPSDE()), _draw_paths),
    "corrector": (lambda: corrector_relaxation(demo_mixture(), VPSDE()), _draw_corrector),
    "guidance": (lambda: guided_paths(demo_mixture(), VPSDE()), _draw_guidance),
}
"""Figure name -> (compute it, draw it into a folder)."""


def render(out: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """Compute and draw the named figures (default: all six) into ``out``; returns the files written."""
    _pyplot()  # fail early, in one line, without matplotlib
    out = Path(out)
    written = []
    for name in FIGURES if names is None else names:
        if name not in FIGURES:
            raise ValueError(f"unknown figure {name!r}; choose from {', '.join(FIGURES)}")
        compute, draw = FIGURES[name]
        written += draw(compute(), out)
    return written
