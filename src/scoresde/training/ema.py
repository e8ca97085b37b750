"""The exponential moving averages of the weights that training keeps."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


# -- EMA --------------------------------------------------------------------------------------
class EMA:
    r"""Exponential moving average of a model's floating-point parameters: ``e <- d_n e + (1 - d_n) p``.

    With ``warmup`` the decay of the ``n``-th update (``n = 0, 1, ...``) is
    :math:`d_n = \min(d, (1 + n) / (10 + n))`, so the average forgets the random
    initialisation within the first few hundred steps (the product of the early decays
    vanishes) and reaches the constant ``decay`` after about ``10 / (1 - d)`` updates.
    Without it, ``d^n`` of every averaged weight is still the initialisation after ``n``
    updates (8 % for ``d = 0.999`` after 2,500 steps). ``num_updates`` is checkpointed.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        for k, p in model.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach(), weight)
        self.num_updates += 1

    @contextmanager
    def applied(self, model: nn.Module):
        """Temporarily swap the EMA weights into ``model``."""
        params = dict(model.named_parameters())
        backup = {k: params[k].detach().clone() for k in self.shadow}
        with torch.no_grad():
            for k, v in self.shadow.items():
                params[k].copy_(v)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, v in backup.items():
                    params[k].copy_(v)


EMA_TYPES: dict[str, str] = {
    "classic": "one EMA of fixed decay training.ema (with warm-up)",
    "posthoc": "the classic EMA, and EDM2 power-function profiles whose snapshots rebuild any EMA length afterwards",
}
"""``training.ema_type`` -> what the run keeps."""


# -- post-hoc EMA (Karras et al. 2024, EDM2) --------------------------------------------------------------------
POSTHOC_FORMAT = "scoresde-posthoc-ema-1"
"""The ``format`` of a post-hoc EMA snapshot file (``workdir/posthoc/ema_<step>.safetensors``)."""
MAX_SIGMA_REL = 0.28
"""The largest relative EMA length a power-function profile with ``gamma >= 0`` reaches is ``sqrt(1/12)``
(0.2887); lengths are taken in ``(0, 0.28]``."""


def power_sigma_rel(gamma: float) -> float:
    r"""Relative length (std over age) of the power-function profile :math:`p(\tau) \propto \tau^\gamma` on
    :math:`[0, t]`: :math:`\sigma_\mathrm{rel} = \sqrt{(\gamma + 1) / ((\gamma + 2)^2 (\gamma + 3))}`."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    r"""The exponent :math:`\gamma \ge 0` of the power-function EMA of relative length ``sigma_rel``: the root of
    :math:`(\gamma + 2)^2 (\gamma + 3) \sigma_\mathrm{rel}^2 = \gamma + 1` (decreasing in :math:`\gamma`), found by
    bisection to float64 precision."""
    if not (isinstance(sigma_rel, int | float) and 0.0 < sigma_rel <= MAX_SIGMA_REL):
        raise ValueError(f"an EMA length (sigma_rel) must be a number in (0, {MAX_SIGMA_REL}], got {sigma_rel!r}")
    low, high = 0.0, 1.0
    while power_sigma_rel(high) > sigma_rel:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if power_sigma_rel(mid) > sigma_rel:
            low = mid
        else:
            high = mid
        if high - low <= 1e-15 * high:
            break
    return 0.5 * (low + high)


def power_profile_dot(t_a: float, gamma_a: float, t_b: float, gamma_b: float) -> float:
    r"""Inner product of two normalised power-function profiles
    :math:`p_{t,\gamma}(\tau) = (\gamma + 1) \tau^\gamma / t^{\gamma + 1}` on :math:`[0, t]`:

    .. math:: \int_0^{t_a} p_a p_b \, d\tau
              = \frac{(\gamma_a + 1)(\gamma_b + 1)}{(\gamma_a + \gamma_b + 1)\, t_b}
                \Big(\frac{t_a}{t_b}\Big)^{\gamma_b} \qquad (t_a \le t_b).
    """
    if t_a > t_b:
        t_a, gamma_a, t_b, gamma_b = t_b, gamma_b, t_a, gamma_a
    return (gamma_a + 1) * (gamma_b + 1) * (t_a / t_b) ** gamma_b / ((gamma_a + gamma_b + 1) * t_b)


def posthoc_coefficients(profiles: list[tuple[float, float]], t_target: float, gamma_target: float) -> list[float]:
    r"""Least-squares weights :math:`x` of stored profiles ``(t_i, gamma_i)`` whose combination best matches the
    target profile in :math:`L^2`: :math:`A x = b`, :math:`A_{ij} = \langle p_i, p_j \rangle`,
    :math:`b_i = \langle p_i, p_\mathrm{target} \rangle` (solved in float64 by least squares)."""
    a = torch.tensor([[power_profile_dot(ti, gi, tj, gj) for tj, gj in profiles] for ti, gi in profiles],
                     dtype=torch.float64)  # fmt: skip
    b = torch.tensor([[power_profile_dot(ti, gi, t_target, gamma_target)] for ti, gi in profiles], dtype=torch.float64)
    return torch.linalg.lstsq(a, b, driver="gelsd").solution[:, 0].tolist()


class PostHocEMA:
    r"""Power-function EMA profiles of a model's parameters, kept for post-hoc EMA (EDM2).

    Profile ``i`` averages with the decay :math:`\beta_n = (1 - 1/n)^{\gamma_i + 1}` at update ``n = 1, 2, ...``
    (``gamma_i`` from its relative length ``sigma_rels[i]``), so after ``n`` updates the weight of update ``k``
    is about :math:`(\gamma + 1) k^\gamma / n^{\gamma + 1}`: an average over a fixed *fraction* of training, not
    a fixed number of steps. Snapshots of the profiles (:meth:`save`) taken during training let
    :func:`reconstruct_posthoc` build the EMA of any other length afterwards.
    """

    def __init__(self, model: nn.Module, sigma_rels: tuple[float, ...]) -> None:
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = [sigma_rel_to_gamma(s) for s in self.sigma_rels]
        self.num_updates = 0
        self.shadows = [{k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
                        for _ in self.sigma_rels]  # fmt: skip

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        params = dict(model.named_parameters())
        for gamma, shadow in zip(self.gammas, self.shadows, strict=True):
            weight = 1.0 - (1.0 - 1.0 / self.num_updates) ** (gamma + 1.0)
            for k, value in shadow.items():
                value.lerp_(params[k].detach(), weight)

    def state_tensors(self) -> dict[str, Tensor]:
        """The profiles as checkpoint entries ``ema_posthoc.<i>.<name>``."""
        return {f"ema_posthoc.{i}.{k}": v for i, shadow in enumerate(self.shadows) for k, v in shadow.items()}

    def load_state(self, tensors: dict[str, Tensor], num_updates: int, path: Path) -> None:
        for i, shadow in enumerate(self.shadows):
            for k, value in shadow.items():
                stored = tensors.get(f"ema_posthoc.{i}.{k}")
                if stored is None or stored.shape != value.shape:
                    raise ValueError(f"{path}: post-hoc EMA profile {i} entry {k} is missing or does not fit")
                value.copy_(stored)
        self.num_updates = num_updates

    def save(self, folder: Path, step: int, model: nn.Module, metadata: dict[str, Any]) -> Path:
        """Write the profiles (and the model's entries that are not averaged: buffers, frozen weights) to
        ``folder/ema_<step>.safetensors``."""
        from ..checkpoint import save_checkpoint

        tensors = {f"profile{i}.{k}": v for i, shadow in enumerate(self.shadows) for k, v in shadow.items()}
        tensors |= {f"buffer.{k}": v for k, v in model.state_dict().items() if k not in self.shadows[0]}
        meta = {"format": POSTHOC_FORMAT, "model_format": metadata["format"], "config": metadata["config"],
                "step": step, "updates": self.num_updates, "sigma_rels": list(self.sigma_rels),
                "gammas": self.gammas}  # fmt: skip
        return save_checkpoint(folder / f"ema_{step:08d}.safetensors", tensors, meta)

    @staticmethod
    def drop_after(folder: Path, step: int) -> None:
        """Delete the snapshots a killed run wrote after ``step`` (the run resumes from there)."""
        for path, snap_step in posthoc_snapshots(folder):
            if snap_step > step:
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)


def posthoc_snapshots(folder: Path) -> list[tuple[Path, int]]:
    """``(path, step)`` of the post-hoc EMA snapshots in ``folder``, by step."""
    if not folder.is_dir():
        return []
    found = [(p, int(p.stem.split("_")[1])) for p in folder.glob("ema_*.safetensors") if p.stem.split("_")[1].isdigit()]
    return sorted(found, key=lambda item: item[1])


def reconstruct_posthoc(folder: str | Path, sigma_rel: float, step: int | None = None
                        ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:  # fmt: skip
    r"""The EMA of relative length ``sigma_rel`` at ``step`` (default: the last snapshot's) rebuilt from the
    post-hoc snapshots in ``folder``: :math:`\hat\theta = \sum_i x_i \theta_i` over every stored profile of every
    snapshot up to ``step``, with the weights :math:`x` of :func:`posthoc_coefficients` (time = updates).

    Returns ``(parameters, buffers, metadata of the last snapshot used)``; snapshots are read one at a time and
    summed in float64 (memory: two copies of the parameters).
    """
    from ..checkpoint import CheckpointError, load_checkpoint, read_metadata

    folder = Path(folder)
    gamma = sigma_rel_to_gamma(sigma_rel)
    found = posthoc_snapshots(folder)
    if not found:
        raise FileNotFoundError(f"{folder} has no post-hoc EMA snapshots (ema_<step>.safetensors); train with "
                                "training.ema_type = 'posthoc'")  # fmt: skip
    if step is not None:
        if step not in [s for _, s in found]:
            raise ValueError(f"{folder} has no post-hoc snapshot at step {step}; it has steps "
                             f"{found[0][1]}..{found[-1][1]}")  # fmt: skip
        found = [(p, s) for p, s in found if s <= step]
    metas = []
    for path, _ in found:
        meta = read_metadata(path)
        if meta.get("format") != POSTHOC_FORMAT:
            raise CheckpointError(f"{path} is not a post-hoc EMA snapshot")
        metas.append(meta)
    if len({json.dumps(m["config"], sort_keys=True) for m in metas}) > 1:
        raise ValueError(f"{folder} mixes post-hoc snapshots of different runs (their configs differ)")
    profiles = [(float(m["updates"]), g) for m in metas for g in m["gammas"]]
    weights = posthoc_coefficients(profiles, float(metas[-1]["updates"]), gamma)
    total: dict[str, Tensor] = {}
    buffers: dict[str, Tensor] = {}
    index = 0
    for (path, _), meta in zip(found, metas, strict=True):
        tensors, _ = load_checkpoint(path)
        for i in range(len(meta["gammas"])):
            for name, value in tensors.items():
                if name.startswith(f"profile{i}."):
                    key = name[len(f"profile{i}.") :]
                    term = value.double() * weights[index]
                    total[key] = total[key] + term if key in total else term
            index += 1
        buffers = {name[len("buffer.") :]: value for name, value in tensors.items() if name.startswith("buffer.")}
        dtypes = {name[name.index(".") + 1 :]: value.dtype for name, value in tensors.items()}
    params = {k: v.to(dtypes[k]) for k, v in total.items()}
    return params, buffers, metas[-1]


def posthoc_folder(path: str | Path) -> Path:
    """The post-hoc snapshot folder ``path`` names: the folder itself, or a training workdir's (or its
    ``checkpoints/`` folder's sibling) ``posthoc/``."""
    path = Path(path)
    for candidate in (path, path / "posthoc", path.parent / "posthoc"):
        if posthoc_snapshots(candidate):
            return candidate
    raise FileNotFoundError(f"no post-hoc EMA snapshots in {path} (nor in its posthoc/ folder); train with "
                            "training.ema_type = 'posthoc'")  # fmt: skip


def save_posthoc_checkpoint(source: str | Path, sigma_rel: float, out: str | Path, step: int | None = None) -> Path:
    """Reconstruct the EMA of length ``sigma_rel`` (:func:`reconstruct_posthoc`) from the snapshots ``source``
    names (:func:`posthoc_folder`) and write it as a checkpoint ``out/checkpoint_<step>.safetensors`` that
    ``scoresde sample``, ``evaluate`` and :func:`scoresde.load` read (weights only: it does not resume training).
    An existing file is never replaced."""
    from ..checkpoint import save_checkpoint

    gamma = sigma_rel_to_gamma(sigma_rel)
    folder = posthoc_folder(source)
    params, buffers, meta = reconstruct_posthoc(folder, sigma_rel, step)
    path = Path(out) / f"checkpoint_{meta['step']:08d}.safetensors"
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another --out folder")
    tensors = {f"model.{k}": v for k, v in (params | buffers).items()} | {
        f"ema.{k}": v.clone() for k, v in params.items()
    }
    metadata = {"format": meta["model_format"], "step": meta["step"], "config": meta["config"], "history": [],
                "posthoc_ema": {"sigma_rel": sigma_rel, "gamma": gamma, "snapshots": str(folder),
                                "updates": meta["updates"]}}  # fmt: skip
    return save_checkpoint(path, tensors, metadata)
