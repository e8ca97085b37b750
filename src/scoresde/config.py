"""Declarative run configuration: TOML files, typed sections, dotted command-line overrides.

A config file has the sections ``[sde]``, ``[data]``, ``[model]``, ``[training]``,
``[sampling]``, ``[eval]`` and ``[classifier]`` (all optional; defaults below). ``[classifier]``
is the noise-conditional classifier that ``scoresde train-classifier`` trains for the
``[sde]`` and ``[data]`` of the same file (so a score model's config trains its matching
classifier). Unknown sections or keys are errors, and so are values of the wrong type or
out of range (:data:`RANGES`, :data:`CROSS_RANGES`, checked on load). ``--set training.lr=1e-4``
style overrides are parsed as TOML values (``1e-4``, ``true``, ``[1, 2]``, ``"text"``; a bare
word is taken as a string).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class SDEConfig:
    """The forward process. Each type reads its own keys (an unset optional key takes the process's default):

    ``vp``, ``subvp``: ``beta_min``, ``beta_max``; ``ve``: ``sigma_min`` (0.01), ``sigma_max`` (50);
    ``edm``: ``sigma_min`` (0.002), ``sigma_max`` (80); ``rectified_flow``: ``T`` (0.999);
    ``cosine``: ``cosine_s``, ``T`` (0.9946). Every type reads ``N``.
    """

    type: str = "vp"  # vp | subvp | ve | cosine | rectified_flow | edm
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float | None = None
    sigma_max: float | None = None
    cosine_s: float = 0.008
    T: float | None = None
    N: int = 1000


SDE_KEYS: dict[str, dict[str, str]] = {
    "vp": {"beta_min": "beta_min", "beta_max": "beta_max"},
    "subvp": {"beta_min": "beta_min", "beta_max": "beta_max"},
    "ve": {"sigma_min": "sigma_min", "sigma_max": "sigma_max"},
    "edm": {"sigma_min": "sigma_min", "sigma_max": "sigma_max"},
    "rectified_flow": {"T": "T"},
    "cosine": {"cosine_s": "s", "T": "T"},
}
"""The ``[sde]`` keys each type reads (besides ``N``), and the process's constructor argument each one sets."""


@dataclass
class DataConfig:
    dataset: str = "digits"  # digits | image_folder | cifar10 | mnist | toy
    root: str = ""
    image_size: int = 8
    channels: int = 1
    toy: str = "mixture"
    toy_size: int = 20_000
    data_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    dequantize: bool = True
    flip: bool = False
    storage: str = "memory"  # image_folder: memory (decoded into RAM) | memmap (decoded once into a cache file)
    cache: str = ""  # memmap's cache folder ("" = $XDG_CACHE_HOME/scoresde/image_folders)
    workers: int = 0  # memmap: processes that decode the folder (0 = this one)


@dataclass
class ModelConfig:
    arch: str = "ddpmpp_small"  # ncsnpp | ddpmpp | ddpm | ddpmpp_small | unet | mlp
    prediction: str = "eps"  # eps | x0 | score | v | velocity | edm
    time_input: str = "t"  # t | sigma | log_sigma | sigma_index | c_noise
    time_scale: float = 999.0
    std: str = "marginal"  # marginal | discrete (eps / DDPM's discrete std: the reference's discrete VP models)
    sigma_data: float = 0.5  # EDM's data std: the edm prediction's preconditioning and the edm weighting
    net: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the network


@dataclass
class TrainingConfig:
    n_iters: int = 3000
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.9
    eps_adam: float = 1e-8
    weight_decay: float = 0.0
    warmup: int = 5000
    lr_decay: str = "none"  # none | cosine | linear: after the warmup, lr annealed towards 0 at n_iters
    grad_clip: float = 1.0
    ema: float = 0.9999
    ema_warmup: bool = True  # decay min(ema, (1 + n) / (10 + n)) at update n
    loss: str = "dsm"  # dsm | ddpm | smld
    weighting: str = "sigma2"  # sigma2 | likelihood | edm | velocity | min_snr
    time_sampling: str = "uniform"  # uniform | importance | lognormal | logit_normal
    time_mean: float | None = None  # lognormal (ln sigma/alpha, default -1.2) / logit_normal (logit t, default 0)
    time_std: float | None = None  # their std (defaults 1.2 and 1)
    min_snr_gamma: float = 5.0  # gamma of the min_snr weighting
    importance_sampling: bool = False  # = time_sampling "importance" (dsm + likelihood: t ~ g^2/sigma^2, reweighted)
    p_uncond: float = 0.0  # class-conditional models: probability of the null label (classifier-free guidance)
    reduce: str = "mean"  # mean | sum
    eps: float = 1e-5
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast, CPU and CUDA) | fp16 (CUDA autocast with a gradient scaler)
    amp: bool = False  # older name of precision = "fp16"
    compile: bool = False  # the network through torch.compile
    channels_last: bool = False  # images and convolution weights in the channels-last memory format
    grad_accum: int = 1  # micro-batches per step (batch_size / grad_accum images each)
    grad_checkpointing: bool = False  # the network's blocks recompute their activations in the backward pass
    deterministic: bool = False  # deterministic CUDA kernels (bit-exact resume on a GPU; slower)
    ema_type: str = "classic"  # classic | posthoc (also keep EDM2 power-function profiles for the ema command)
    posthoc_lengths: list[float] = field(default_factory=lambda: [0.05, 0.1])  # sigma_rel of the two profiles
    posthoc_every: int = 100  # steps between post-hoc EMA snapshots (workdir/posthoc/)
    log_every: int = 50
    snapshot_every: int = 1000
    keep: int = 3
    tensorboard: bool = False


@dataclass
class SamplingConfig:
    sampler: str = "euler_maruyama"
    steps: int = 1000
    n: int = 64
    eps: float = 0.0  # 0 = the SDE's default (1e-3 VP/sub-VP, 1e-5 VE)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """Defaults of ``scoresde evaluate`` and ``scoresde likelihood`` (their flags override them)."""

    split: str = "test"  # reference set of the sample metrics, and the split scored by the likelihood
    n: int = 1000  # samples drawn by evaluate
    batch_size: int = 500  # samples (and likelihood solves) per batch: bounded memory for any n
    likelihood: bool = True  # evaluate also reports bits/dim (images) or NLL (2-D) of the split
    repeats: int = 1
    likelihood_method: str = "adams"  # adams (fixed grid, 40 NFE) | rk45 (adaptive: rtol, atol) | euler | heun | rk4
    likelihood_steps: int = 39  # steps of a fixed-grid likelihood method (adams: steps + 1 NFE)
    probes: int = 1  # Hutchinson probes per sample and evaluation
    truncation: str = "none"  # none (the model's density at eps, the paper's) | decoder (Gaussian-decoder bound)
    rtol: float = 1e-5
    atol: float = 1e-5
    inception: str = ""  # Inception-v3 FID weights file: the feature space for images other than the digits


@dataclass
class ClassifierConfig:
    """The noise-conditional classifier p_t(y | x) of ``scoresde train-classifier``: network and training.

    Trained with cross-entropy on x_t = alpha(t) x0 + sigma(t) z, t ~ U(eps, T), under the file's [sde].
    """

    arch: str = "cnn"  # cnn (images) | mlp (vectors, 2-D toys)
    num_classes: int = 10
    net: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the network
    n_iters: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    lr_decay: str = "none"  # none | cosine | linear, as training.lr_decay
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eps: float = 1e-5  # smallest training time
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA), as training.precision
    compile: bool = False
    channels_last: bool = False
    grad_accum: int = 1
    grad_checkpointing: bool = False
    deterministic: bool = False
    log_every: int = 100
    snapshot_every: int = 500
    keep: int = 2
    eval_times: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.25, 0.5, 0.75, 1.0])  # test accuracy at


@dataclass
class Config:
    sde: SDEConfig = field(default_factory=SDEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown sections, keys and wrong types."""
    cfg = Config()
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for name, values in raw.items():
        if name not in sections:
            raise ConfigError(f"unknown config section [{name}]; known: {', '.join(sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{name}] must be a table")
        section = getattr(cfg, name)
        for key, value in values.items():
            _assign(section, name, key, value)
    return check_ranges(cfg)


# -- value ranges: field -> (predicate, what it must be); checked when a config is loaded ----------
def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f"must be >= {low}"


def _positive() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v > 0), "must be > 0"


def _unit(closed_low: bool) -> tuple[Callable[[Any], bool], str]:
    if closed_low:
        return (lambda v: 0 <= v < 1), "must be in [0, 1)"
    return (lambda v: 0 < v < 1), "must be in (0, 1)"


def _is_times(value: list) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    return len(value) > 0 and numbers and all(0 < v <= 1 for v in value)


def _is_lengths(value: list) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    return len(value) > 0 and numbers and all(0 < v <= 0.28 for v in value)


def _is_interval(value: list) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    return len(value) == 2 and numbers and value[0] < value[1]


RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "sde.beta_min": _positive(),
    "sde.beta_max": _positive(),
    "sde.sigma_min": _positive(),
    "sde.sigma_max": _positive(),
    "sde.cosine_s": _positive(),
    "sde.T": _positive(),
    "sde.N": _at_least(2),
    "data.image_size": _at_least(1),
    "data.channels": _at_least(1),
    "data.toy_size": _at_least(1),
    "data.workers": _at_least(0),
    "data.data_range": (_is_interval, "must be [low, high] with finite low < high"),
    "model.time_scale": _positive(),
    "model.sigma_data": _positive(),
    "training.n_iters": _at_least(1),
    "training.batch_size": _at_least(1),
    "training.lr": _positive(),
    "training.beta1": _unit(closed_low=True),
    "training.eps_adam": _positive(),
    "training.weight_decay": _at_least(0),
    "training.warmup": _at_least(0),
    "training.grad_clip": _at_least(0),
    "training.ema": _unit(closed_low=True),
    "training.eps": _unit(closed_low=False),
    "training.p_uncond": _unit(closed_low=True),
    "training.time_std": _positive(),
    "training.min_snr_gamma": _positive(),
    "training.grad_accum": _at_least(1),
    "training.posthoc_lengths": (_is_lengths, "must be a non-empty list of EMA lengths (sigma_rel) in (0, 0.28]"),
    "training.posthoc_every": _at_least(1),
    "training.log_every": _at_least(1),
    "training.snapshot_every": _at_least(1),
    "training.keep": _at_least(0),
    "sampling.steps": _at_least(1),
    "sampling.n": _at_least(1),
    "sampling.eps": _unit(closed_low=True),
    "eval.likelihood_steps": _at_least(1),
    "eval.probes": _at_least(1),
    "classifier.num_classes": _at_least(2),
    "classifier.n_iters": _at_least(1),
    "classifier.batch_size": _at_least(1),
    "classifier.lr": _positive(),
    "classifier.warmup": _at_least(0),
    "classifier.weight_decay": _at_least(0),
    "classifier.grad_clip": _at_least(0),
    "classifier.eps": _unit(closed_low=False),
    "classifier.grad_accum": _at_least(1),
    "classifier.log_every": _at_least(1),
    "classifier.snapshot_every": _at_least(1),
    "classifier.keep": _at_least(0),
    "classifier.eval_times": (_is_times, "must be a non-empty list of times in (0, 1]"),
}
# checks across fields: (fields, predicate on their values, what must hold)
CROSS_RANGES: list[tuple[tuple[str, ...], Callable[..., bool], str]] = [
    (("sde.beta_min", "sde.beta_max"), lambda lo, hi: lo <= hi, "sde.beta_min must be <= sde.beta_max"),
    (
        ("sde.sigma_min", "sde.sigma_max"),
        lambda lo, hi: lo is None or hi is None or lo < hi,
        "sde.sigma_min must be < sde.sigma_max",
    ),
    (
        ("training.importance_sampling", "training.loss", "training.weighting"),
        lambda on, loss, weighting: not on or (loss == "dsm" and weighting == "likelihood"),
        "training.importance_sampling = true needs training.loss 'dsm' and training.weighting 'likelihood'",
    ),
    (
        ("training.importance_sampling", "training.time_sampling"),
        lambda on, kind: not on or kind in ("uniform", "importance"),
        "training.importance_sampling = true is training.time_sampling 'importance'; do not combine it with another",
    ),
    (
        ("training.time_sampling", "training.loss", "training.weighting"),
        lambda kind, loss, weighting: kind != "importance" or (loss == "dsm" and weighting == "likelihood"),
        "training.time_sampling 'importance' needs training.loss 'dsm' and training.weighting 'likelihood'",
    ),
    (
        ("training.time_sampling", "training.loss"),
        lambda kind, loss: kind == "uniform" or loss == "dsm",
        "training.time_sampling other than 'uniform' needs training.loss 'dsm' (the discrete losses draw levels)",
    ),
    (
        ("training.time_sampling", "training.time_mean", "training.time_std"),
        lambda kind, mean, std: kind in ("lognormal", "logit_normal") or (mean is None and std is None),
        "training.time_mean and training.time_std set the lognormal and logit_normal times only",
    ),
    (
        ("training.batch_size", "training.grad_accum"),
        lambda batch, accum: batch % accum == 0,
        "training.batch_size must be divisible by training.grad_accum (equal micro-batches)",
    ),
    (
        ("classifier.batch_size", "classifier.grad_accum"),
        lambda batch, accum: batch % accum == 0,
        "classifier.batch_size must be divisible by classifier.grad_accum (equal micro-batches)",
    ),
    (
        ("training.amp", "training.precision"),
        lambda amp, precision: not amp or precision in ("fp32", "fp16"),
        "training.amp = true is training.precision 'fp16'; do not combine it with another precision",
    ),
]
# sections whose float fields must be finite ([eval] is validated where it is used)
FINITE_SECTIONS = ("sde", "data", "model", "training", "sampling", "classifier")


def _get(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def check_sde_keys(cfg: Config) -> None:
    """A ``[sde]`` key the type does not read must keep its default (see :data:`SDE_KEYS`)."""
    s = cfg.sde
    reads = SDE_KEYS.get(s.type)
    if reads is None:  # an unknown type: the registry check names it
        return
    for f in dataclasses.fields(SDEConfig):
        if f.name in ("type", "N") or f.name in reads:
            continue
        if getattr(s, f.name) != f.default:
            keys = ", ".join([*reads, "N"])
            raise ConfigError(f"sde.{f.name} is not read by sde.type {s.type!r} (its keys: {keys})")


def stored_config(raw: dict[str, Any]) -> Config:
    """A config stored in a checkpoint: :func:`from_dict` after dropping the ``[sde]`` keys its type does not
    read (configs written before the per-type keys carry every key of the old flat section)."""
    sde = raw.get("sde")
    if isinstance(sde, dict) and sde.get("type") in SDE_KEYS:
        keep = {"type", "N", *SDE_KEYS[sde["type"]]}
        raw = {**raw, "sde": {k: v for k, v in sde.items() if k in keep}}
    return from_dict(raw)


def check_ranges(cfg: Config) -> Config:
    """Raise :class:`ConfigError` naming the first field whose value is out of range (see :data:`RANGES`)."""
    for name in FINITE_SECTIONS:
        section = getattr(cfg, name)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{name}.{f.name} must be a finite number, got {value!r}")
    for dotted, (ok, must) in RANGES.items():
        value = _get(cfg, dotted)
        if value is not None and not ok(value):
            raise ConfigError(f"{dotted} {must}, got {value!r}")
    for fields, ok, must in CROSS_RANGES:
        values = [_get(cfg, f) for f in fields]
        if not ok(*values):
            raise ConfigError(f"{must}, got {', '.join(f'{f} = {v!r}' for f, v in zip(fields, values, strict=True))}")
    check_sde_keys(cfg)
    return cfg


def _optional(section: Any, key: str) -> bool:
    """Whether a field is an optional number (type ``float | None``, default ``None``: unset)."""
    field_type = {f.name: f.type for f in dataclasses.fields(section)}[key]
    return "None" in str(field_type)


def _assign(section: Any, section_name: str, key: str, value: Any) -> None:
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        raise ConfigError(f"unknown key {section_name}.{key}; known: {', '.join(fields)}")
    default = getattr(section, key)
    if _optional(section, key):  # an optional number: None (unset, the process's default) or a number
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        value = float(value) if ok and value is not None else value
        if not ok:
            raise ConfigError(f"{section_name}.{key} must be a number, got {value!r}")
        setattr(section, key, value)
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, dict)
    if not ok:
        raise ConfigError(f"{section_name}.{key} must be {type(default).__name__}, got {value!r}")
    setattr(section, key, value)


def parse_value(raw: str) -> Any:
    """A command-line value as TOML (``1e-4``, ``true``, ``[1, 2]``, ``"text"``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return raw.strip()


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"section.key=value"`` to ``(section, key, value)``; a nested ``section.key.sub=value`` sets a table entry."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    path, raw = text.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) < 2:
        raise ConfigError(f"override {text!r} must name a section and a key, e.g. training.lr=1e-4")
    value = parse_value(raw)
    if len(parts) > 2:  # e.g. model.net.nf=64 or sampling.options.snr=0.1
        value = {".".join(parts[2:]): value}
    return parts[0], parts[1], value


PRESETS_DIR = Path(__file__).parent / "configs"
"""The preset configs shipped with the package (``scoresde configs`` lists them)."""


def presets() -> dict[str, str]:
    """``{name: the first sentence of its leading comment}`` of every preset config, sorted by name."""
    found = {}
    for path in sorted(PRESETS_DIR.glob("*.toml")):
        comment = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("#").strip())
        text = " ".join(comment)
        found[path.stem] = re.split(r"(?<! al)\. (?=[A-Z`])", text)[0].rstrip(".") + "." if text else ""
    return found


def config_path(path: str | Path) -> Path:
    """A config file: ``path`` itself when it is a file, else the preset of that name (``digits_vp`` or
    ``digits_vp.toml``); neither is a ``FileNotFoundError`` that lists the presets."""
    path = Path(path)
    if path.is_file():
        return path
    preset = PRESETS_DIR / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    if len(path.parts) == 1 and preset.is_file():
        return preset
    raise FileNotFoundError(f"config file {path} not found, and it is not a preset; presets: {', '.join(presets())}")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a TOML config (a file or a preset's name, :func:`presets`; the defaults when ``path`` is None) and
    apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = config_path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from err
    for text in overrides:
        section, key, value = parse_override(text)
        table = raw.setdefault(section, {})
        if isinstance(value, dict) and isinstance(table.get(key), dict):
            table[key] = {**table[key], **value}
        else:
            table[key] = value
    return from_dict(raw)
