r"""Score parameterizations: from a network's output to a score function, and back.

Under a kernel :math:`x_t = \alpha(t) x_0 + \sigma(t)\epsilon` a network may predict

* ``"eps"``: the noise, :math:`s = -\hat\epsilon / \sigma`;
* ``"x0"``: the clean data, :math:`s = (\alpha \hat x_0 - x) / \sigma^2`;
* ``"score"``: the score itself, :math:`s = \hat s`;
* ``"v"``: :math:`v = \alpha\epsilon - \sigma x_0` (Salimans & Ho 2022), so
  :math:`\hat\epsilon = (\sigma x + \alpha \hat v)/(\alpha^2 + \sigma^2)` and :math:`s = -\hat\epsilon/\sigma`;
* ``"velocity"``: the flow-matching target :math:`u = \alpha' x_0 + \sigma'\epsilon`, the velocity of
  the path (the probability-flow ODE of the process is :math:`dx/dt = E[u | x_t]`), so
  :math:`\hat\epsilon = (\alpha\hat u - \alpha' x)/(\alpha\sigma' - \alpha'\sigma)` and :math:`s = -\hat\epsilon/\sigma`
  (the denominator is :math:`-\alpha\sigma\lambda' > 0`);
* ``"edm"``: EDM's preconditioned network (Karras et al. 2022, generalised to :math:`\alpha \ne 1` in the
  scaled state :math:`x/\alpha` with noise level :math:`\hat\sigma = \sigma/\alpha`): the network sees
  :math:`c_{in} x/\alpha` with :math:`c_{in} = 1/\sqrt{\hat\sigma^2 + \sigma_d^2}`, and its output
  :math:`F` gives the denoiser :math:`D = c_{skip} x/\alpha + c_{out} F`, :math:`c_{skip} =
  \sigma_d^2/(\hat\sigma^2 + \sigma_d^2)`, :math:`c_{out} = \hat\sigma\sigma_d/\sqrt{\hat\sigma^2 + \sigma_d^2}`;
  with :math:`r = \sqrt{\sigma^2 + \alpha^2\sigma_d^2}` the score is
  :math:`s = (\alpha D - x)/\sigma^2 = (\alpha\sigma_d F/\sigma - x/r)/r` (no cancellation at small
  :math:`\sigma`). ``sigma_data`` is :math:`\sigma_d` (0.5 in EDM). EDM's noise label
  :math:`c_{noise} = \tfrac14\log\hat\sigma` is ``time_input="c_noise"``.

:func:`output_from_score` is the inverse of :func:`score_from_output`. The map used for
denoising is Tweedie's formula, :math:`\hat x_0 = (x + \sigma^2 s) / \alpha`.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import TimeLike, batch_time, check_options, expand_to
from .sde import SDE

PREDICTIONS = ("eps", "x0", "score", "v", "velocity", "edm")
TIME_INPUTS = ("t", "sigma", "log_sigma", "sigma_index", "c_noise")
STDS = ("marginal", "discrete")
SIGMA_DATA = 0.5
r"""EDM's data standard deviation :math:`\sigma_d` for images scaled to [-1, 1]."""


def _coeffs(sde: SDE, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
    return tuple(expand_to(c, x) for c in sde.marginal_coeffs(t, x))


def _velocity_coeffs(sde: SDE, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
    r""":math:`(\alpha', \alpha\sigma' - \alpha'\sigma)` shaped to broadcast against ``x``."""
    tt = sde._time(t, x)
    alpha, sigma = sde.marginal_coeffs(tt, x)
    d_alpha, d_sigma = sde.kernel_derivatives(tt)
    return expand_to(d_alpha, x), expand_to(alpha * d_sigma - d_alpha * sigma, x)


def _check_sigma_data(sigma_data: float) -> float:
    if (
        isinstance(sigma_data, bool)
        or not isinstance(sigma_data, (int, float))
        or not (math.isfinite(sigma_data) and sigma_data > 0)
    ):
        raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")
    return float(sigma_data)


def edm_input_scale(sde: SDE, x: Tensor, t: TimeLike, sigma_data: float = SIGMA_DATA) -> Tensor:
    r"""EDM's input scaling of ``x`` itself, :math:`c_{in}/\alpha = 1/\sqrt{\sigma^2 + \alpha^2\sigma_d^2}`."""
    alpha, sigma = _coeffs(sde, x, t)
    return torch.rsqrt(sigma**2 + (alpha * sigma_data) ** 2)


def score_from_output(sde: SDE, x: Tensor, t: TimeLike, output: Tensor, prediction: str = "eps",
                      sigma_data: float = SIGMA_DATA) -> Tensor:  # fmt: skip
    """Convert a network ``output`` of the given ``prediction`` type to a score (see module docstring).

    For ``"edm"`` the ``output`` is the raw network output :math:`F` (the network having seen the
    input scaled by :func:`edm_input_scale`); ``sigma_data`` is used by ``"edm"`` only.
    """
    check_options("prediction", prediction, PREDICTIONS)
    if prediction == "score":
        return output
    if prediction == "velocity":
        d_alpha, denom = _velocity_coeffs(sde, x, t)
        alpha, sigma = _coeffs(sde, x, t)
        return -(alpha * output - d_alpha * x) / (denom * sigma)
    alpha, sigma = _coeffs(sde, x, t)
    if prediction == "eps":
        return -output / sigma
    if prediction == "x0":
        return (alpha * output - x) / sigma**2
    if prediction == "edm":
        sigma_data = _check_sigma_data(sigma_data)
        r = torch.sqrt(sigma**2 + (alpha * sigma_data) ** 2)
        return (alpha * sigma_data * output / sigma - x / r) / r
    eps = (sigma * x + alpha * output) / (alpha**2 + sigma**2)
    return -eps / sigma


def output_from_score(sde: SDE, x: Tensor, t: TimeLike, score: Tensor, prediction: str = "eps",
                      sigma_data: float = SIGMA_DATA) -> Tensor:  # fmt: skip
    r"""The network output of the given ``prediction`` type that gives ``score`` (the inverse of
    :func:`score_from_output`): with :math:`\hat\epsilon = -\sigma s` and
    :math:`\hat x_0 = (x - \sigma\hat\epsilon)/\alpha`, ``eps`` :math:`\hat\epsilon`, ``x0`` :math:`\hat x_0`,
    ``v`` :math:`\alpha\hat\epsilon - \sigma\hat x_0`, ``velocity`` :math:`\alpha'\hat x_0 + \sigma'\hat\epsilon`,
    ``edm`` :math:`(\hat x_0 - c_{skip}x/\alpha)/c_{out}`.
    The training targets are these with the true :math:`x_0` and :math:`\epsilon`."""
    check_options("prediction", prediction, PREDICTIONS)
    if prediction == "score":
        return score
    alpha, sigma = _coeffs(sde, x, t)
    eps = -sigma * score
    if prediction == "eps":
        return eps
    x0 = (x - sigma * eps) / alpha
    if prediction == "x0":
        return x0
    if prediction == "v":
        return alpha * eps - sigma * x0
    if prediction == "velocity":
        tt = sde._time(t, x)
        d_alpha, d_sigma = (expand_to(c, x) for c in sde.kernel_derivatives(tt))
        return d_alpha * x0 + d_sigma * eps
    sigma_data = _check_sigma_data(sigma_data)
    r = torch.sqrt(sigma**2 + (alpha * sigma_data) ** 2)
    return (score * r + x / r) * sigma / (alpha * sigma_data)


def x0_from_score(sde: SDE, x: Tensor, t: TimeLike, score: Tensor) -> Tensor:
    r"""Tweedie's denoiser :math:`E[x_0 | x_t] = (x_t + \sigma(t)^2 s) / \alpha(t)`."""
    alpha, sigma = (expand_to(c, x) for c in sde.marginal_coeffs(t, x))
    return (x + sigma**2 * score) / alpha


def eps_from_score(sde: SDE, x: Tensor, t: TimeLike, score: Tensor) -> Tensor:
    r"""The noise prediction equivalent to a score: :math:`\hat\epsilon = -\sigma(t) s`."""
    sigma = expand_to(sde.marginal_coeffs(t, x)[1], x)
    return -sigma * score


def model_num_classes(model: object) -> int | None:
    """The number of classes of a class-conditional network (its ``num_classes``; also through a DDP
    wrapper's ``module``), ``None`` for an unconditional one. The null label is ``num_classes``."""
    inner = getattr(model, "module", model)
    num_classes = getattr(inner, "num_classes", None)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise TypeError(f"the model's num_classes must be an int or None, got {num_classes!r}")
    return num_classes


class ModelScore:
    r"""Wrap a network ``model(x, label)`` as a score function ``s(x, t)``.

    Args:
        model: a module called as ``model(x, label)`` with ``label`` of shape ``[B]``; a
            class-conditional one (with an int attribute ``num_classes``, as ``NCSNpp`` and
            ``TimeMLP`` built with ``num_classes``) as ``model(x, label, y)``.
        sde: the forward SDE the model was trained with.
        prediction: what the network predicts: ``"eps"``, ``"x0"``, ``"score"``, ``"v"``,
            ``"velocity"`` or ``"edm"`` (EDM's preconditioning: the network sees its input scaled by
            :func:`edm_input_scale`; see the module docstring).
        time_input: what the network is fed as ``label``: ``"t"``, ``"sigma"`` (the
            marginal std :math:`\sigma(t)`), ``"log_sigma"``, ``"sigma_index"`` (the index
            :math:`\mathrm{round}((T - t)(N - 1)/T)` into the ``N`` descending noise levels, as
            the reference's discrete-time VE models take it), ``"c_noise"`` (EDM's
            :math:`\tfrac14\log(\sigma/\alpha)`), or a callable ``t -> label``.
        time_scale: multiplies the label; the reference DDPM++ feeds ``999 t``, i.e.
            ``time_input="t", time_scale=999``.
        std: what an ``"eps"`` prediction is divided by: ``"marginal"``, the SDE's
            :math:`\sigma(t)`, or ``"discrete"``, DDPM's
            :math:`\sqrt{1 - \bar\alpha_i}` at level :math:`i = \lfloor t (N - 1)/T \rfloor`
            (the reference's discrete-time VP models; a ``VPSDE`` only).
        y: fixed class labels of a class-conditional model, an int for every sample or a
            ``[B]`` integer tensor, making it the conditional score :math:`s(x, t \mid y)`;
            ``None`` (default) is the null label, the unconditional score. A ``y`` passed to
            a call (``score(x, t, y=labels)``, as the losses and classifier-free guidance
            do) takes precedence.
        sigma_data: :math:`\sigma_d` of the ``"edm"`` prediction (unused by the others).
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Tensor],
        sde: SDE,
        prediction: str = "eps",
        time_input: str | Callable[[Tensor], Tensor] = "t",
        time_scale: float = 1.0,
        y: int | Tensor | None = None,
        std: str = "marginal",
        sigma_data: float = SIGMA_DATA,
    ) -> None:
        check_options("prediction", prediction, PREDICTIONS)
        if not callable(time_input):
            check_options("time_input", time_input, TIME_INPUTS)
        check_options("std", std, STDS)
        if std == "discrete" and (prediction != "eps" or sde.discrete_levels != "ddpm"):
            raise ValueError(f"std='discrete' (DDPM's discrete noise levels) needs prediction='eps' and a VPSDE, got "
                             f"prediction={prediction!r} and {sde!r}")  # fmt: skip
        self.std = std
        self.sigma_data = _check_sigma_data(sigma_data)
        self._discrete_std = torch.sqrt(1.0 - sde.discrete_alphas_cumprod()) if std == "discrete" else None
        self.model = model
        self.sde = sde
        self.prediction = prediction
        self.time_input = time_input
        self.time_scale = float(time_scale)
        self.num_classes = model_num_classes(model)
        self.y = None if y is None else check_class_labels(y, self.num_classes)

    def label(self, t: Tensor, x: Tensor) -> Tensor:
        """The time value fed to the network for times ``t`` (shape ``[B]``)."""
        if callable(self.time_input):
            label = self.time_input(t)
        elif self.time_input == "t":
            label = t
        elif self.time_input == "sigma_index":
            label = torch.round((self.sde.T - t) * ((self.sde.N - 1) / self.sde.T))
        elif self.time_input == "c_noise":
            alpha, sigma = self.sde.marginal_coeffs(t, x)
            label = 0.25 * (torch.log(sigma) - torch.log(alpha))
        else:
            sigma = self.sde.marginal_coeffs(t, x)[1]
            label = sigma if self.time_input == "sigma" else torch.log(sigma)
        return label * self.time_scale

    def __call__(self, x: Tensor, t: TimeLike, y: int | Tensor | None = None) -> Tensor:
        t = batch_time(t, x, self.sde.T)
        labels = batch_class_labels(self.y if y is None else y, x, self.num_classes)
        label = self.label(t, x)
        inp = x * edm_input_scale(self.sde, x, t, self.sigma_data) if self.prediction == "edm" else x
        output = self.model(inp, label) if labels is None else self.model(inp, label, labels)
        if not isinstance(output, Tensor) or output.shape != x.shape:
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"the model must return a tensor shaped like x {tuple(x.shape)}, got {got}")
        if self._discrete_std is not None:
            if self._discrete_std.device != x.device:
                self._discrete_std = self._discrete_std.to(x.device)
            std = self._discrete_std[self.sde._level(t).long()].to(x.dtype)
            return -output / expand_to(std, x)
        return score_from_output(self.sde, x, t, output, self.prediction, self.sigma_data)

    def __repr__(self) -> str:
        fixed = "" if self.y is None else f", y={self.y if isinstance(self.y, int) else 'tensor'}"
        return (
            f"ModelScore(prediction={self.prediction!r}, time_input={self.time_input!r}, "
            f"time_scale={self.time_scale}, std={self.std!r}, sde={self.sde!r}{fixed}"
            + (f", sigma_data={self.sigma_data})" if self.prediction == "edm" else ")")
        )


class ScoreModel(nn.Module):
    r"""A trained score model as one object: its network, forward process and parameterization, and what it was
    trained on. It is itself a score function, ``model(x, t)`` (or ``model(x, t, y=labels)`` when
    class-conditional), :math:`s_\theta(x, t) \approx \nabla_x \log p_t(x)`, computed from the network's output
    by :func:`score_from_output` (see :class:`ModelScore`, which it wraps).

    :func:`scoresde.load` builds one from a checkpoint; :func:`scoresde.sample`, :func:`scoresde.log_likelihood`,
    :func:`scoresde.bits_per_dim`, the guidance transforms and the inverse problems take it in place of
    ``(sde, score_fn)`` and read their defaults from it (data shape, levels, range, sampler). ``.to(device)``,
    ``torch.compile`` and ``DistributedDataParallel`` work on it as on any module; its state dict is the
    network's under ``net.``.

    Args:
        net: the network, called as ``net(x, label)`` (``net(x, label, y)`` when class-conditional).
        sde: the forward process it was trained with.
        prediction, time_input, time_scale, std, sigma_data: the parameterization (see :class:`ModelScore`).
        data_shape: one sample's shape, e.g. ``(1, 8, 8)`` or ``(2,)`` (``None``: unknown; pass shapes yourself).
        data_range: the model-space interval the data levels were mapped onto (images; ``None`` for data
            without one, e.g. the 2-D toys). ``sample`` warns when its samples leave it, and the inverse problems
            refuse inputs outside it.
        levels: grey levels of the data (17 for the digits, 256 for 8-bit images; ``None`` for continuous data).
        sampling: default sampling settings (``sampler``, ``steps``, ``eps``, ``n``, ``options``) used by
            :func:`scoresde.sample` when no sampler is given.
        config: the training config it came from (a :class:`scoresde.config.Config`), for reference.
        weights: which weights these are (``"ema"`` or ``"raw"``).
        source: where it was loaded from (a checkpoint path), for reports.
    """

    def __init__(
        self,
        net: nn.Module,
        sde: SDE,
        *,
        prediction: str = "eps",
        time_input: str | Callable[[Tensor], Tensor] = "t",
        time_scale: float = 1.0,
        std: str = "marginal",
        sigma_data: float = SIGMA_DATA,
        data_shape: tuple[int, ...] | None = None,
        data_range: tuple[float, float] | None = None,
        levels: int | None = None,
        sampling: dict | None = None,
        config: object | None = None,
        weights: str = "ema",
        source: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net
        self.sde = sde
        self.parameterization = ModelScore(net, sde, prediction=prediction, time_input=time_input,
                                           time_scale=time_scale, std=std, sigma_data=sigma_data)  # fmt: skip
        self.data_shape = None if data_shape is None else tuple(int(d) for d in data_shape)
        self.data_range = None if data_range is None else (float(data_range[0]), float(data_range[1]))
        self.levels = levels
        self.sampling = dict(sampling or {})
        self.config = config
        self.weights = weights
        self.source = source

    @property
    def prediction(self) -> str:
        return self.parameterization.prediction

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional model (its null label is ``num_classes``), ``None`` if unconditional."""
        return self.parameterization.num_classes

    def forward(self, x: Tensor, t: TimeLike, y: int | Tensor | None = None) -> Tensor:
        """The score :math:`s_\theta(x, t)` (of class ``y`` for a class-conditional model; ``None``: unconditional)."""
        return self.parameterization(x, t, y)

    def __repr__(self) -> str:
        """One line: the process, the parameterization, the data, the weights and the network's size
        (``print(model.net)`` shows the layers)."""
        shape = "?" if self.data_shape is None else "x".join(map(str, self.data_shape))
        classes = "" if self.num_classes is None else f", classes={self.num_classes}"
        size = sum(p.numel() for p in self.net.parameters())
        return (f"ScoreModel({self.sde!r}, prediction={self.prediction!r}, data={shape}, weights={self.weights!r}"
                f"{classes}, net={type(self.net).__name__} with {size / 1e6:.2f} M parameters)")  # fmt: skip


def as_score_model(obj: object) -> ScoreModel | None:
    """The :class:`ScoreModel` that ``obj`` is or wraps (``torch.compile``'s ``_orig_mod``, DDP's ``module``),
    else ``None``."""
    for _ in range(4):
        if isinstance(obj, ScoreModel):
            return obj
        if not isinstance(obj, nn.Module):
            return None
        obj = getattr(obj, "_orig_mod", None) or getattr(obj, "module", None)
    return None


def takes_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Let ``fn(sde, score_fn, *args)`` also be called as ``fn(model, *args)`` with a :class:`ScoreModel` (or a
    compiled / DDP-wrapped one), the model giving both (and its ``data_range`` to an ``fn`` that takes one);
    ``score_fn=`` may still pass a transform of it (e.g. a guided score)."""

    @functools.wraps(fn)
    def wrapper(first: Any, *args: Any, **kwargs: Any) -> Any:
        model = as_score_model(first)
        if model is None:
            return fn(first, *args, **kwargs)
        score_fn = kwargs.pop("score_fn", first)
        if takes_range and model.data_range is not None:
            kwargs.setdefault("data_range", model.data_range)
        return fn(model.sde, score_fn, *args, **kwargs)

    takes_range = "data_range" in inspect.signature(fn).parameters

    return wrapper


def check_class_labels(y: int | Tensor, num_classes: int | None, null: bool = False) -> int | Tensor:
    """Validate class labels for a model of ``num_classes`` classes (one host sync for a tensor).

    ``y`` is an int or a ``[B]`` integer tensor with values in ``[0, num_classes)``, or up to
    ``num_classes`` (the null label) with ``null=True``. An unconditional model
    (``num_classes=None``) takes no labels.
    """
    if num_classes is None:
        raise ValueError("the model is not class-conditional (built without num_classes), so it takes no class "
                         "labels; train one with model.net.num_classes, or use a classifier for guidance")  # fmt: skip
    top = num_classes + 1 if null else num_classes
    if isinstance(y, bool) or not isinstance(y, (int, Tensor)):
        raise TypeError(f"class labels must be an int or a [B] integer tensor, got {type(y).__name__}")
    if isinstance(y, int):
        if not 0 <= y < top:
            raise ValueError(f"class {y} requested from a model of {num_classes} classes (valid: 0 to {top - 1})")
        return y
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"class labels must be an int or a [B] integer tensor, got {y.dtype} of shape "
                         f"{tuple(y.shape)}")  # fmt: skip
    if y.numel() and (bool((y < 0).any()) or bool((y >= top).any())):
        lo, hi = int(y.min()), int(y.max())
        raise ValueError(f"class labels must be in [0, {top}) for a model of {num_classes} classes, got values "
                         f"in [{lo}, {hi}]")  # fmt: skip
    return y


def batch_class_labels(y: int | Tensor | None, x: Tensor, num_classes: int | None) -> Tensor | None:
    """Labels for the batch ``x`` (shapes only, no sync): an int broadcast to ``[B]``, a ``[B]`` tensor moved to
    ``x``'s device, ``None`` the null label ``num_classes`` of a conditional model (and ``None`` for an
    unconditional one); labels for an unconditional model are an error."""
    if y is None:
        return None if num_classes is None else torch.full((x.shape[0],), num_classes, device=x.device)
    if num_classes is None:
        check_class_labels(y, num_classes)  # raises: the model takes no labels
    if isinstance(y, int):
        return torch.full((x.shape[0],), y, dtype=torch.int64, device=x.device)
    if y.shape != (x.shape[0],):
        raise ValueError(f"{y.shape[0] if y.ndim else 0} class labels for a batch of {x.shape[0]} (per-sample "
                         "labels need the whole batch in every call: no batch_size, and for the adaptive ode "
                         "solver error_norm='batch'; or pass one int class)")  # fmt: skip
    return y.to(device=x.device, dtype=torch.int64)


class CountedScore:
    """A score function that counts its evaluations and checks every output.

    Each call must return a tensor shaped like ``x``; ``nfe`` counts the calls
    (one batched network evaluation each). Non-finite scores raise at once on the
    CPU; on an accelerator they are recorded on the device (no host sync per call)
    and :meth:`check` raises at the end of the run.
    """

    def __init__(self, score_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable, got {type(score_fn).__name__}")
        self.score_fn = score_fn
        self.nfe = 0
        self._bad: Tensor | None = None
        self._bad_t: Tensor | None = None

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        score = self.score_fn(x, t)
        self.nfe += 1
        if not isinstance(score, Tensor) or score.shape != x.shape:
            got = tuple(score.shape) if isinstance(score, Tensor) else type(score).__name__
            raise ValueError(f"score_fn must return a tensor shaped like x {tuple(x.shape)}, got {got}")
        finite = torch.isfinite(score).all()
        t_now = t.detach().reshape(-1)[0] if isinstance(t, Tensor) else torch.tensor(float(t))
        if score.device.type == "cpu":
            if not bool(finite):
                raise FloatingPointError(_nonfinite_message(float(t_now), self.nfe, x))
        elif self._bad is None:
            self._bad = ~finite
            self._bad_t = t_now.to(score.device, torch.float64)
        else:
            fresh = ~finite & ~self._bad
            self._bad_t = torch.where(fresh, t_now.to(score.device, torch.float64), self._bad_t)
            self._bad = self._bad | ~finite
        return score

    def check(self) -> None:
        """Raise ``FloatingPointError`` if any evaluation so far returned NaN or inf."""
        if self._bad is not None and bool(self._bad):
            raise FloatingPointError(_nonfinite_message(float(self._bad_t), None))


def _nonfinite_message(t: float, call: int | None, x: Tensor | None = None) -> str:
    """Whom to blame for a non-finite score: the state it was given (diverged, or given far too large), else the
    model."""
    where = f" (evaluation {call})" if call is not None else ""
    if x is not None:
        if not bool(torch.isfinite(x).all()):
            return (f"the state reached NaN or inf before evaluation {call} at t={t:.6g}: the integration diverged "
                    "(too few steps, too large a step size or snr) or its inputs were not finite")  # fmt: skip
        peak = float(x.detach().abs().max()) if x.numel() else 0.0
        if peak > HUGE_INPUT:
            return (f"score_fn returned NaN or inf at t={t:.6g}{where} for inputs as large as {peak:.3g}: the "
                    "inputs are far outside the model's range, not a fault of the model")  # fmt: skip
    return f"score_fn returned NaN or inf at t={t:.6g}{where}; check the model, its inputs and the time range"


HUGE_INPUT = 1e6
"""Inputs larger than this are blamed for a non-finite score, not the model (no data or prior lies near it)."""
