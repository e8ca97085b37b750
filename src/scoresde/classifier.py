r"""Noise-conditional classifiers :math:`p_t(y \mid x)` for classifier guidance (paper appendix I.1).

A classifier of *perturbed* data at every time, trained with cross-entropy on
:math:`x_t = \alpha(t) x_0 + \sigma(t) z`, :math:`t \sim U(\epsilon, T)`, :math:`z \sim N(0, I)`,
under the same SDE as the score model it guides:

.. math:: L(\theta) = \mathbb{E}_{t, (x_0, y), z}\big[-\log p_\theta(y \mid x_t, t)\big].

Its log-probabilities are the ``classifier_logp(x, t) -> [B, K]`` of
:func:`scoresde.guidance.classifier_guided`, whose gradient in ``x`` steers an unconditional
score model towards a class.

The network sees :math:`x_t / \sqrt{\alpha(t)^2 + \sigma(t)^2}` (unit scale at every time
for unit-scale data, VE included) and the time ``t`` (Gaussian Fourier features). Two
networks (:data:`CLASSIFIER_ARCHS`): ``"cnn"`` for images ``[C, H, W]`` of any size (DDPM
residual blocks with the time embedding, 2x average pooling between levels, global average
pooling, a linear head) and ``"mlp"`` for vectors ``[D]`` (2-D toys).

:func:`train_classifier` trains one from a config's ``[sde]``, ``[data]`` and ``[classifier]``
sections with the conventions of the score-model trainer (workdir lock, safetensors
checkpoints written atomically, exact resume, ``overwrite``; the same loop, :func:`scoresde.training.fit`), and
ends with the test
accuracy at the times ``classifier.eval_times`` (printed by ``scoresde train-classifier`` and
written to ``accuracy.json``). :func:`load_classifier` rebuilds a trained one. Nothing here
imports the score-model trainer.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import batch_time, expand_to
from .build import (
    DATASETS,
    batch_indices,
    build_sde,
    check_choice,
    check_labels_exist,
    check_resume,
    data_shape,
    load_dataset,
    model_batch,
    with_absolute_root,
)
from .checkpoint import CLASSIFIER_FORMAT, Checkpoint, check_format, load_weights_strict, prefixed
from .config import Config, check_ranges, stored_config
from .devices import pick_device
from .distributed import init_from_env
from .losses import training_noise
from .nets.layers import GaussianFourierProjection, ResnetBlockDDPM, conv, dense, group_norm
from .plotting import atomic_write, check_writable_dir
from .sde import SDE
from .training.loop import LR_DECAYS, Objective, claimed_workdir, fit, learning_rate_schedule
from .training.options import PRECISIONS, check_fit_options, fit_options
from .validation import check_class_count, check_data_config, check_labels

CLASSIFIER_OUTPUTS = ("log.jsonl", "accuracy.json")
"""What a classifier run writes besides its checkpoints (deleted by ``overwrite``)."""


# -- networks -------------------------------------------------------------------------------------
class TimeCNN(nn.Module):
    """``net(x, t) -> [B, K]`` logits for images ``[B, C, H, W]`` of any size.

    A 3x3 input convolution, ``num_res_blocks`` DDPM residual blocks per level (``nf * mult``
    channels for each ``mult`` of ``ch_mult``; the time embedding enters every block) with 2x
    average pooling between levels, then GroupNorm, SiLU, global average pooling and a linear head.

    Args:
        channels: image channels; ``num_classes``: number of classes ``K``.
        nf, ch_mult, num_res_blocks: widths and depth; ``dropout`` inside the blocks.
        fourier_scale: std of the fixed Fourier frequencies of the time embedding.
    """

    def __init__(self, channels: int, num_classes: int, nf: int = 16, ch_mult: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 1, dropout: float = 0.0, fourier_scale: float = 16.0) -> None:  # fmt: skip
        super().__init__()
        if not ch_mult or num_res_blocks < 1 or nf < 1:
            raise ValueError("TimeCNN needs nf >= 1, num_res_blocks >= 1 and a non-empty ch_mult")
        self.channels, self.num_classes = channels, num_classes
        temb_dim = 4 * nf
        self.fourier = GaussianFourierProjection(nf, fourier_scale)
        self.temb = nn.Sequential(dense(2 * nf, temb_dim), nn.SiLU(), dense(temb_dim, temb_dim))
        self.conv_in = conv(channels, nf)
        self.levels = nn.ModuleList()
        in_ch = nf
        for mult in ch_mult:
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlockDDPM(in_ch, nf * mult, temb_dim, dropout, skip_rescale=True))
                in_ch = nf * mult
            self.levels.append(blocks)
        self.norm = group_norm(in_ch)
        self.head = dense(in_ch, num_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected images [B, {self.channels}, H, W], got {tuple(x.shape)}")
        temb = self.temb(self.fourier(t).to(x.dtype))
        h = self.conv_in(x)
        for level, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, temb)
            if level != len(self.levels) - 1 and min(h.shape[-2:]) >= 2:
                h = F.avg_pool2d(h, 2)
        return self.head(F.silu(self.norm(h)).mean(dim=(-2, -1)))


class TimeMLPClassifier(nn.Module):
    """``net(x, t) -> [B, K]`` logits for vectors ``[B, D]``: the time embedding is added to every hidden layer."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 128, depth: int = 3,
                 fourier_scale: float = 16.0) -> None:  # fmt: skip
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        self.fourier = GaussianFourierProjection(hidden // 2, fourier_scale)
        self.embed = nn.Sequential(nn.Linear(2 * (hidden // 2), hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x of shape [B, {self.dim}], got {tuple(x.shape)}")
        temb = self.embed(self.fourier(t).to(x.dtype))
        h = self.inp(x)
        for layer in self.hidden:
            h = layer(F.silu(h + temb))
        return self.head(F.silu(h))


CLASSIFIER_ARCHS: dict[str, type[nn.Module]] = {"cnn": TimeCNN, "mlp": TimeMLPClassifier}
# keyword arguments of the networks that come from the config's other keys, not from classifier.net
_FROM_CONFIG = ("channels", "dim", "num_classes")


class NoisyClassifier(nn.Module):
    r"""``classifier(x, t) -> [B, K]`` log-probabilities :math:`\log p_t(y \mid x)`: a network of
    :data:`CLASSIFIER_ARCHS` fed :math:`x / \sqrt{\alpha(t)^2 + \sigma(t)^2}` and ``t`` under ``sde``.

    It is a ``classifier_logp`` for :func:`scoresde.guidance.classifier_guided`; ``t`` is a float
    or a ``[B]`` tensor in ``[0, T]``.
    """

    def __init__(self, net: nn.Module, sde: SDE) -> None:
        super().__init__()
        self.net = net
        self.sde = sde
        self.num_classes = int(net.num_classes)

    def logits(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Unnormalized class scores ``[B, K]``."""
        t = batch_time(t, x, self.sde.T)
        alpha, sigma = self.sde.marginal_coeffs(t, x)
        return self.net(x * expand_to(torch.rsqrt(alpha**2 + sigma**2), x), t)

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        return torch.log_softmax(self.logits(x, t), dim=1)


def perturb(sde: SDE, x0: Tensor, t: float | Tensor, z: Tensor) -> Tensor:
    r""":math:`x_t = \alpha(t) x_0 + \sigma(t) z`, a draw of the SDE's kernel."""
    mean, std = sde.marginal_prob(x0, t)
    return mean + expand_to(std, x0) * z


def classifier_loss(classifier: NoisyClassifier, x0: Tensor, y: Tensor, t: Tensor, z: Tensor) -> Tensor:
    r"""Mean cross-entropy :math:`-\log p_\theta(y \mid x_t, t)` on :math:`x_t = \alpha(t) x_0 + \sigma(t) z`."""
    return F.nll_loss(classifier(perturb(classifier.sde, x0, t, z), t), y)


# -- config -> objects ----------------------------------------------------------------------------
def classifier_options(arch: str) -> set[str]:
    """The ``classifier.net`` keys a network accepts."""
    params = inspect.signature(CLASSIFIER_ARCHS[arch]).parameters
    return {name for name, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD} - set(_FROM_CONFIG)


def check_classifier_config(cfg: Config, data: bool = True) -> Config:
    """Raise a one-line ``ValueError`` unless the ``[sde]``, ``[data]`` and ``[classifier]`` sections can
    train a classifier; cheap, reads no data (with ``data``, ``data.root`` must be a directory)."""
    check_ranges(cfg)
    c, d = cfg.classifier, cfg.data
    build_sde(cfg)  # the type's name and the process's own parameter checks
    check_choice("data.dataset", d.dataset, DATASETS)
    check_choice("classifier.arch", c.arch, CLASSIFIER_ARCHS)
    check_choice("classifier.precision", c.precision, PRECISIONS)
    check_choice("classifier.lr_decay", c.lr_decay, LR_DECAYS)
    check_data_config(cfg, data)
    if (c.arch == "mlp") != (d.dataset == "toy"):
        what = "vectors (data.dataset 'toy')" if c.arch == "mlp" else "images; use classifier.arch 'mlp' for toy data"
        raise ValueError(f"classifier.arch {c.arch!r} is for {what}, got data.dataset {d.dataset!r}")
    check_labels_exist(cfg, "a classifier")
    check_class_count(c.num_classes, cfg, "classifier.num_classes")
    accepted = classifier_options(c.arch)
    unknown = sorted(set(c.net) - accepted)
    if unknown:
        raise ValueError(f"classifier.net has option(s) {unknown} that classifier.arch {c.arch!r} does not accept; "
                         f"it takes {sorted(accepted)}")  # fmt: skip
    return cfg


def build_classifier(cfg: Config) -> NoisyClassifier:
    """The configured (untrained) classifier under the configured SDE."""
    c, shape = cfg.classifier, data_shape(cfg)
    check_choice("classifier.arch", c.arch, CLASSIFIER_ARCHS)
    size = {"dim": shape[0]} if c.arch == "mlp" else {"channels": shape[0]}
    try:
        net = CLASSIFIER_ARCHS[c.arch](num_classes=c.num_classes, **size, **c.net)
    except TypeError as err:
        raise ValueError(f"classifier.net has an option {c.arch!r} does not accept: {err}") from err
    return NoisyClassifier(net, build_sde(cfg))


def load_classifier(
    path: str | Path | Checkpoint, device: str | torch.device = "cpu"
) -> tuple[Config, NoisyClassifier]:
    """Rebuild ``(config, classifier)`` from a classifier checkpoint (a file, a checkpoints folder: the newest, or
    an opened :class:`~scoresde.checkpoint.Checkpoint`).

    The classifier is in eval mode with frozen weights; ``classifier(x, t)`` gives ``[B, K]`` log-probabilities.
    """
    ckpt = path if isinstance(path, Checkpoint) else Checkpoint.open(path, CLASSIFIER_FORMAT)
    check_format(ckpt.meta, CLASSIFIER_FORMAT, ckpt.path)
    cfg = ckpt.config
    classifier = build_classifier(cfg)
    load_weights_strict(classifier, prefixed(ckpt.tensors(), "model"), what="classifier checkpoint")
    classifier.requires_grad_(False)
    return cfg, classifier.to(device).eval()


# -- accuracy -------------------------------------------------------------------------------------
@torch.no_grad()
def accuracy_at_times(classifier: NoisyClassifier, x0: Tensor, labels: Tensor, times: Sequence[float],
                      generator: torch.Generator | None = None, batch_size: int = 1000) -> list[float]:  # fmt: skip
    """Accuracy of :math:`\\arg\\max_y p_t(y | x_t)` on :math:`x_t = \\alpha(t) x_0 + \\sigma(t) z` at each time
    (one fresh ``z`` per time, from ``generator``)."""
    device = next(classifier.parameters()).device
    result = []
    for t in times:
        correct = 0
        for lo in range(0, x0.shape[0], batch_size):
            batch = x0[lo : lo + batch_size]
            z = torch.randn(batch.shape, generator=generator, dtype=batch.dtype)
            xt = perturb(classifier.sde, batch, float(t), z).to(device)
            correct += int((classifier(xt, float(t)).argmax(1).cpu() == labels[lo : lo + batch_size]).sum())
        result.append(correct / max(x0.shape[0], 1))
    return result


def evaluate_classifier(classifier: NoisyClassifier, cfg: Config, split: str = "test", seed: int = 0) -> dict[str, Any]:
    """Accuracy on a split at the times ``classifier.eval_times``, next to chance (the largest class share)."""
    data, labels = load_dataset(cfg, split, return_labels=True)
    check_labels(labels, classifier.num_classes, "classifier.num_classes")
    gen = torch.Generator().manual_seed(seed)
    x0 = model_batch(data, torch.arange(len(labels)), cfg, gen)  # dequantized as in training
    times = [float(t) for t in cfg.classifier.eval_times]
    accuracy = accuracy_at_times(classifier, x0, labels, times, gen)
    chance = float(torch.bincount(labels, minlength=classifier.num_classes).max()) / max(len(labels), 1)
    return {"split": split, "n": len(labels), "num_classes": classifier.num_classes, "chance": chance,
            "times": times, "accuracy": accuracy}  # fmt: skip


# -- training -------------------------------------------------------------------------------------
def classifier_lr(cfg: Config, step: int) -> float:
    """Linear warmup ``lr * min(1, (step + 1) / warmup)``, then ``classifier.lr_decay``
    (:func:`scoresde.training.loop.learning_rate_schedule`)."""
    c = cfg.classifier
    return learning_rate_schedule(c.lr, c.warmup, step, c.n_iters, c.lr_decay)


def train_classifier(cfg: Config, workdir: str | Path, resume: bool = True, progress: bool | None = None,
                     overwrite: bool = False) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """Train the configured noise-conditional classifier in ``workdir``.

    Returns the final checkpoint and the test-split accuracy report (also written to
    ``workdir/accuracy.json``). Same loop (:func:`scoresde.training.fit`: precision, compilation,
    gradient accumulation, DDP under ``torchrun``) and workdir conventions as
    :func:`scoresde.train.train`: the workdir is locked, ``resume`` (default) continues from the
    newest checkpoint exactly, ``resume=False`` refuses a workdir with checkpoints,
    ``overwrite=True`` deletes the previous classifier run's checkpoints, ``log.jsonl`` and
    ``accuracy.json`` first, and a workdir holding a score model's run is refused. Everything is
    checked before any work.
    """
    workdir = Path(workdir)
    check_classifier_config(cfg)
    cfg = with_absolute_root(cfg)  # stored in the checkpoints: found again from any working directory
    device = pick_device(cfg.classifier.device)
    opts = fit_options(cfg.classifier)
    check_writable_dir(workdir, "workdir")
    progress = sys.stderr.isatty() if progress is None else progress
    rank, world = init_from_env(device)
    check_fit_options(opts, device, "classifier", world)
    same_run = partial(_check_same_classifier, cfg=cfg)
    with claimed_workdir(workdir, CLASSIFIER_FORMAT, resume, overwrite, CLASSIFIER_OUTPUTS, same_run, rank, world):
        objective = classifier_objective(cfg)
        final = fit(objective, opts, workdir, device, resume and not overwrite, progress)
        if rank != 0:
            return final, {}
        classifier = objective.model.eval()
        report = evaluate_classifier(classifier, cfg, "test", seed=cfg.classifier.seed) | {"step": opts.n_iters}
        atomic_write(workdir / "accuracy.json", lambda handle: handle.write(json.dumps(report, indent=2).encode()))
        return final, report


CLASSIFIER_RESUMABLE = ("data.root", "data.cache", "data.workers", "classifier.n_iters", "classifier.log_every",
                        "classifier.snapshot_every", "classifier.keep", "classifier.device",
                        "classifier.deterministic", "classifier.eval_times")  # fmt: skip
"""The config keys a resumed classifier run may change; any other change of the sections it reads is refused."""


def _check_same_classifier(saved: dict[str, Any], path: Path, cfg: Config) -> None:
    check_resume(stored_config(saved), cfg, path, ("data", "classifier"), CLASSIFIER_RESUMABLE)


def classifier_objective(cfg: Config) -> Objective:
    r"""The classifier's :class:`~scoresde.training.Objective`: the configured network (initialised from
    ``classifier.seed``), batches of data, labels and the DSM draws (:math:`t \sim U(\epsilon, T)`,
    :math:`z \sim N(0, I)`), the cross-entropy on the perturbed data, and the batch accuracy as a metric."""
    c = cfg.classifier
    torch.manual_seed(c.seed)
    data, labels = load_dataset(cfg, "train", return_labels=True)
    check_labels(labels, c.num_classes, "classifier.num_classes")
    classifier = build_classifier(cfg)
    sde = classifier.sde

    indices = batch_indices(cfg, len(labels), c.batch_size, c.seed)

    def draw(step: int, generator: torch.Generator) -> dict[str, Tensor]:
        idx = indices(step, generator)
        x = model_batch(data, idx, cfg, generator)
        noise = training_noise("dsm", sde, x, c.eps, generator)
        return {"x": x, "y": labels[idx], "t": noise["t"], "z": noise["z"]}

    def make_loss(network: nn.Module):
        def loss(batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
            logp = network(perturb(sde, batch["x"], batch["t"], batch["z"]), batch["t"])
            hits = (logp.detach().argmax(1) == batch["y"]).float().mean()
            return F.nll_loss(logp, batch["y"]), {"batch_accuracy": hits}  # classifier_loss, with the accuracy

        return loss

    return Objective(model=classifier, draw=draw, make_loss=make_loss, lr=partial(classifier_lr, cfg),
                     metadata={"format": CLASSIFIER_FORMAT, "config": cfg.to_dict()},
                     check_resume=partial(_check_same_classifier, cfg=cfg), adam={"weight_decay": c.weight_decay},
                     what="classifier", lr_key="classifier.lr")  # fmt: skip


def accuracy_table(report: dict[str, Any]) -> str:
    """The accuracy report as lines: one time and accuracy per line, and chance."""
    rows = [f"  t = {t:<6g} accuracy {a:.3f}" for t, a in zip(report["times"], report["accuracy"], strict=True)]
    head = (
        f"{report['split']} accuracy of the noisy classifier ({report['n']} examples, chance {report['chance']:.3f}):"
    )
    return "\n".join([head, *rows])
