"""Sampler options from configs and the command line: ``KEY=VALUE`` strings parsed and every option checked, before
any work, against the sampler's own signature (its keyword defaults give the types) and its declared rules
(:mod:`scoresde.sampling.spec`: choices and ranges)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..config import parse_value
from . import SAMPLERS, sampler_options, spec_of


def _check_name(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(map(repr, SAMPLERS))}")


def sampler_option_defaults(sampler: str) -> dict[str, Any]:
    """``{option: default}`` of a named sampler, read from its signature."""
    _check_name(sampler)
    params = inspect.signature(SAMPLERS[sampler]).parameters
    return {name: params[name].default for name in sampler_options(sampler)}


def _typed_option(sampler: str, key: str, value: Any, default: Any, what: str) -> Any:
    where = f"{what} {key} of sampler {sampler!r}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if not (isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"{where} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if not number or not math.isfinite(value):
            raise ValueError(f"{where} must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}")
    elif isinstance(default, tuple):  # a pair of numbers such as data_range: [lo, hi]
        if not (isinstance(value, (list, tuple)) and len(value) == len(default)):
            raise ValueError(f"{where} must be a list of {len(default)} numbers like {list(default)}, got {value!r}")
        value = tuple(value)
    rule = spec_of(SAMPLERS[sampler]).rules.get(key)  # the sampler's own rule for this option
    if rule is not None and rule.choices is not None and value not in rule.choices:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, rule.choices))}, got {value!r}")
    if rule is not None and (number or isinstance(value, tuple)) and not rule.passes(value):
        raise ValueError(f"{where} {rule.message}, got {value!r}")
    return value


def check_sampler_options(sampler: str, options: Mapping[str, Any], what: str = "option") -> dict[str, Any]:
    """Options of a named sampler, checked against the defaults in its signature.

    Unknown options are errors; a boolean option takes only ``true``/``false``, an integer
    only an integer, a float any number, and a string option with a fixed set of values
    (``method``, ``error_norm``, ``predictor``, ``corrector``) only one of them.
    """
    defaults = sampler_option_defaults(sampler)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown} for sampler {sampler!r}; it accepts {list(defaults)}")
    return {key: _typed_option(sampler, key, value, defaults[key], what) for key, value in options.items()}


def parse_sampler_options(sampler: str, items: Iterable[str]) -> dict[str, Any]:
    """``["snr=0.1", "probability_flow=true"]`` to options of ``sampler``, checked by :func:`check_sampler_options`."""
    raw: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or "." in key:
            raise ValueError(f"sampler option {item!r} must look like KEY=VALUE, e.g. snr=0.16")
        raw[key] = parse_value(text)
    return check_sampler_options(sampler, raw)
