"""What a sampler declares about itself, in one place beside its code.

A :class:`SamplerSpec` says which time grid the sampler uses by default, whether it picks its own steps
(then it takes no ``steps`` and no grid), how many score evaluations one step takes (then ``steps`` is an NFE
budget, the final denoising evaluation included), and the allowed values of its options. :func:`declare`
attaches it to the sampler function; :func:`scoresde.sample`, the option checks of the configs and the command
line read it through :func:`spec_of`. A sampler of your own without a spec gets :data:`DEFAULT_SPEC`: the
process's default grid, fixed steps, ``steps`` counting grid steps, no option rules beyond their types.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .loop import StepFn, run_steps


@dataclass(frozen=True)
class OptionRule:
    """The allowed values of one sampler option: a fixed set of ``choices`` or a ``check`` with its ``message``."""

    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], bool] | None = None
    message: str = ""

    def passes(self, value: Any) -> bool:
        """Whether ``value`` passes ``check`` (a value the check cannot compare does not)."""
        if self.check is None:
            return True
        try:
            return bool(self.check(value))
        except (TypeError, ValueError):
            return False


def _fixed_steps(options: Mapping[str, Any]) -> bool:
    return False


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler's properties.

    Attributes:
        grid: its default grid kind (``"log_snr"``, ``"karras"``, ...); ``None``: the process's
            ``SDE.default_grid`` (the paper's samplers).
        adaptive: ``adaptive(options)``, whether it picks its own steps with these options.
        evals_per_step: ``evals_per_step(options)``, the score evaluations of one step of a solver whose
            ``steps`` is an NFE budget; ``None``: ``steps`` counts grid steps.
        whole_steps: a step's evaluations cannot be split (EDM's Heun takes two): the grid has
            ``budget // evals_per_step`` steps and an odd budget is used whole; otherwise the last step
            takes the remainder (``ceil``).
        rules: ``{option: OptionRule}``, checked before any work.
        correct_denoised: ``correct_denoised(options)``, the correction (e.g. thresholding) its steps apply to
            every data prediction, which :func:`scoresde.sample` then applies to the final denoising step too;
            ``None`` (or a result of ``None``): no correction.
        stepper: for a sampler declared with :func:`fixed_grid`, its step factory
            ``stepper(sde, ts, **options) -> step``; :func:`scoresde.sample` runs the steps through
            :func:`~scoresde.sampling.loop.run_steps` itself.
    """

    grid: str | None = None
    adaptive: Callable[[Mapping[str, Any]], bool] = _fixed_steps
    evals_per_step: Callable[[Mapping[str, Any]], int] | None = None
    whole_steps: bool = False
    rules: Mapping[str, OptionRule] = field(default_factory=dict)
    correct_denoised: Callable[[Mapping[str, Any]], Callable[[Tensor], Tensor] | None] | None = None
    stepper: Callable[..., StepFn] | None = None


DEFAULT_SPEC = SamplerSpec()
"""The spec of a sampler that declares none."""


def declare(spec: SamplerSpec) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach ``spec`` to a sampler function (as its ``spec`` attribute)."""

    def attach(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.spec = spec  # type: ignore[attr-defined]
        return fn

    return attach


_HOOKS = ("generator", "progress", "callback", "replace", "rows")


def fixed_grid(spec: SamplerSpec) -> Callable[[Callable[..., StepFn]], Callable[..., Tensor]]:
    """Declare a fixed-grid sampler by its step factory ``make(sde, ts, *, options...) -> step`` (a step function
    of :func:`~scoresde.sampling.loop.run_steps`, which may keep state across the steps of one run).

    Returns the public sampler ``sampler(sde, score_fn, x, ts, *, options..., generator, progress, callback,
    replace, rows)``: the factory's steps run through ``run_steps`` with the hooks, written here once, so no
    sampler forwards them. The spec (with ``stepper=make``) is attached to it.
    """

    def wrap(make: Callable[..., StepFn]) -> Callable[..., Tensor]:
        def sampler(sde, score_fn, x, ts, *, generator=None, progress=False, callback=None, replace=None, rows=None,
                    **options):  # fmt: skip
            step = make(sde, ts, **options)
            return run_steps(step, sde, score_fn, x, ts, generator, progress, callback, replace, rows)

        own = inspect.signature(make).parameters
        positional = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                      for name in ("sde", "score_fn", "x", "ts")]  # fmt: skip
        options = [p for p in own.values() if p.kind is p.KEYWORD_ONLY]
        defaults = {"generator": None, "progress": False, "callback": None, "replace": None, "rows": None}
        hooks = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name]) for name in _HOOKS]
        sampler.__signature__ = inspect.Signature([*positional, *options, *hooks])  # type: ignore[attr-defined]
        sampler.__name__, sampler.__qualname__ = make.__name__, make.__qualname__
        sampler.__doc__, sampler.__module__ = make.__doc__, make.__module__
        sampler.spec = dataclasses.replace(spec, stepper=make)  # type: ignore[attr-defined]
        return sampler

    return wrap


def spec_of(fn: Callable[..., Any]) -> SamplerSpec:
    """The spec a sampler function declares, else :data:`DEFAULT_SPEC`."""
    spec = getattr(fn, "spec", DEFAULT_SPEC)
    return spec if isinstance(spec, SamplerSpec) else DEFAULT_SPEC


POSITIVE = OptionRule(check=lambda v: v > 0, message="must be a finite number > 0")
NON_NEGATIVE = OptionRule(check=lambda v: v >= 0, message="must be a finite number >= 0")
ORDER = OptionRule(check=lambda v: 1 <= v <= 3, message="must be 1, 2 or 3")
TOLERANCES = {"rtol": POSITIVE, "atol": POSITIVE}
