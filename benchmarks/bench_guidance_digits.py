"""Controllable generation on the main-job digits model: class guidance, classifier-free guidance, inpainting.

Needs the main-job model (``make demo``), the noise-conditional classifier and, for the
classifier-free table, the label-conditional model:

    scoresde train configs/digits_vp.toml --workdir outputs/digits                           # make demo
    scoresde train-classifier configs/digits_classifier.toml --workdir outputs/digits_classifier
    scoresde train configs/digits_vp_cond.toml --workdir outputs/digits_cond
    python benchmarks/bench_guidance_digits.py [--per-class 100] [--only classifier,cfg,inpaint,colour]

Every guided sample is judged by the shipped digits classifier (99.3 % test accuracy, trained on the
training split only): the share classified as the requested class, its mean confidence, and the
Fréchet distance (its feature space) against the 297 test digits next to the floor (as many training
digits against the test digits), all measured in the same run. Inpainting fills the bottom half of the
297 test digits; the baselines, in the same run, are the classifier on the top half alone (bottom
half grey) and on the full originals. Colorization runs on a synthetic 3-channel Gaussian-mixture image
set with its exact score, where the exact posterior gives the error floor. Writes
``benchmarks/results/guidance_<section>.md`` and the pictures in ``docs/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde import metrics
from scoresde.build import build_score, load_dataset
from scoresde.classifier import load_classifier
from scoresde.data import data_levels, to_levels
from scoresde.features import digits_features
from scoresde.guidance import classifier_free_guided, classifier_guided
from scoresde.inverse import colorize, inpaint
from scoresde.model import load_for_inference
from scoresde.plotting import save_image_grid
from scoresde.toy import GaussianMixture, sample_mixtures

ROOT = Path(__file__).parents[1]
OUT = ROOT / "outputs"
SAMPLER = ("ode", 50, {"method": "heun"})  # the main job's sampler: PF-ODE Heun, 50 steps (101 NFE)
CLASSIFIER_SCALES = (0.0, 1.0, 2.0, 3.0, 4.0, 8.0)
CFG_SCALES = (0.0, 1.0, 2.0, 4.0)
INPAINT_CASES = {  # label: (method, sampler, steps, options)
    "projection, PC (reverse diffusion + Langevin)": ("projection", "pc", 500, {}),
    "projection, Euler-Maruyama": ("projection", "euler_maruyama", 500, {}),
    "projection, DDIM": ("projection", "ddim", 100, {}),
    "DDNM, Euler-Maruyama": ("ddnm", "euler_maruyama", 500, {}),
    "DDNM, DDIM": ("ddnm", "ddim", 100, {}),
    "ΠGDM, DDIM": ("pigdm", "ddim", 100, {}),
    "ΠGDM, Euler-Maruyama": ("pigdm", "euler_maruyama", 500, {}),
}


def _unit_levels(cfg, x: torch.Tensor) -> torch.Tensor:
    """Model-space images quantized to the data's levels, at the bin centres in [0, 1] (as `scoresde evaluate`)."""
    levels = data_levels(cfg.data.dataset)
    return ((to_levels(x, levels, tuple(cfg.data.data_range)).float() + 0.5) / levels).float()


def _judge(cfg, x: torch.Tensor, wanted: torch.Tensor, f_test: torch.Tensor, f_floor: torch.Tensor) -> dict:
    feats, probs = digits_features(_unit_levels(cfg, x))
    hit = probs.argmax(1) == wanted
    return {
        "accuracy": float(hit.double().mean()),
        "confidence": float(probs.gather(1, wanted[:, None]).mean()),
        "fd": metrics.frechet_distance(feats, f_test),
        "fd_floor": metrics.frechet_distance(f_floor, f_test),
    }


def _guided_table(title, cfg, sde, make_score, scales, per_class, f_test, train_unit, pictures):
    n = 10 * per_class
    labels = torch.arange(n) % 10
    f_floor = digits_features(train_unit[:n])[0]
    lines = [f"### {title}", "", "| scale | requested class (shipped classifier) | confidence | FD | FD floor | NFE | "
             "time (s) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for scale in scales:
        x = torch.zeros(n, *cfg_shape(cfg))
        start, nfe = time.perf_counter(), 0
        for k in range(10):
            members = torch.nonzero(labels == k)[:, 0]
            sampler, steps, options = SAMPLER
            x[members], used = sd.sample(sde, make_score(k, scale), (len(members), *cfg_shape(cfg)), sampler=sampler,
                                         steps=steps, generator=sd.SampleNoise(0, members), return_nfe=True,
                                         **options)  # fmt: skip
            nfe = max(nfe, used)
        seconds = time.perf_counter() - start
        r = _judge(cfg, x, labels, f_test, f_floor)
        row = (f"| {scale:g} | {100 * r['accuracy']:.1f} % | {r['confidence']:.3f} | {r['fd']:.2f} | "
               f"{r['fd_floor']:.2f} | {nfe} | {seconds:.0f} |")  # fmt: skip
        lines.append(row)
        print(row, flush=True)
        if scale in pictures:
            order = torch.argsort(labels * n + torch.arange(n))  # class by class
            grid = x[order].reshape(10, per_class, *cfg_shape(cfg))[:, :8].transpose(0, 1).reshape(-1, *cfg_shape(cfg))
            save_image_grid(_unit_levels(cfg, grid), pictures[scale], nrow=10)
    return lines


def cfg_shape(cfg) -> tuple[int, ...]:
    return (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)


def classifier_section(args, f_test, train_unit) -> list[str]:
    cfg, sde, model = load_for_inference(args.model)
    score = build_score(model, sde, cfg)
    classifier = load_classifier(args.classifier)[1]
    return _guided_table(
        "Classifier guidance (main-job model + noise-conditional classifier, PF-ODE Heun 50 steps)",
        cfg, sde, lambda k, w: classifier_guided(score, classifier, k, w), CLASSIFIER_SCALES, args.per_class,
        f_test, train_unit, {args.picture_scale: ROOT / "docs" / "guided_digits.png"},
    )  # fmt: skip


def cfg_section(args, f_test, train_unit) -> list[str]:
    cfg, sde, model = load_for_inference(args.cond)
    score = build_score(model, sde, cfg)
    return _guided_table(
        "Classifier-free guidance (label-conditional model, p_uncond 0.1, PF-ODE Heun 50 steps)",
        cfg, sde, lambda k, w: classifier_free_guided(score, k, w), CFG_SCALES, args.per_class, f_test, train_unit,
        {2.0: ROOT / "docs" / "cfg_digits.png"},
    )  # fmt: skip


def inpaint_section(args) -> list[str]:
    cfg, sde, model = load_for_inference(args.model)
    score = build_score(model, sde, cfg)
    test, labels = load_dataset(cfg, "test", return_labels=True)
    lo, hi = cfg.data.data_range
    x = lo + (hi - lo) * (test.images.float() + 0.5) / test.levels
    mask = torch.ones(1, *cfg_shape(cfg))
    mask[..., cfg.data.image_size // 2 :, :] = 0
    grey = torch.where(mask.bool(), x, torch.zeros_like(x))
    base_masked = float((digits_features(_unit_levels(cfg, grey))[1].argmax(1) == labels).double().mean())
    base_full = float((digits_features(_unit_levels(cfg, x))[1].argmax(1) == labels).double().mean())
    lines = [f"### Inpainting the bottom half of the {x.shape[0]} test digits", "",
             "| method | NFE | classified as the original digit | known half kept (max abs error) | time (s) |",
             "|---|---|---|---|---|",
             f"| baseline: the original digits | - | {100 * base_full:.1f} % | - | - |",
             f"| baseline: the top half alone (bottom grey) | - | {100 * base_masked:.1f} % | - | - |"]  # fmt: skip
    print("\n".join(lines[-2:]), flush=True)
    for label, (method, sampler, steps, options) in INPAINT_CASES.items():
        start = time.perf_counter()
        gen = sd.SampleNoise(0, x.shape[0])
        try:
            out, nfe = inpaint(sde, score, x, mask, method=method, sampler=sampler, steps=steps, generator=gen,
                               return_nfe=True, sampler_options=options)  # fmt: skip
        except FloatingPointError as err:  # reported as a result: the method diverges on this model
            row = f"| {label}, {steps} steps | - | diverged: {str(err).split(';')[0]} | - | - |"
            lines.append(row)
            print(row, flush=True)
            continue
        seconds = time.perf_counter() - start
        kept = float(((out - x) * mask).abs().max())
        acc = float((digits_features(_unit_levels(cfg, out))[1].argmax(1) == labels).double().mean())
        row = f"| {label}, {steps} steps | {nfe} | {100 * acc:.1f} % | {kept:.1e} | {seconds:.0f} |"
        lines.append(row)
        print(row, flush=True)
        if method == "projection" and sampler == "pc":
            pick = torch.arange(10)
            rows = torch.cat([x[pick], torch.where(mask.bool(), x[pick], torch.zeros_like(x[pick])), out[pick]])
            save_image_grid(_unit_levels(cfg, rows), ROOT / "docs" / "inpainted_digits.png", nrow=10)
    return lines


def colour_mixture() -> GaussianMixture:
    """3-channel 8x8 images: four hues of equal grey level over two brightness patterns (the grey image tells the
    pattern, never the hue), plus small noise; the same construction as the colorization test."""
    gen = torch.Generator().manual_seed(1)
    hues = torch.tensor([[0.6, 0.0, -0.3], [-0.4, 0.5, 0.2], [-0.2, -0.3, 0.8], [0.5, 0.4, -0.6]], dtype=torch.float64)
    patterns = 0.4 + 0.6 * torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64)
    means = torch.cat([(hues[:, :, None, None] * p).reshape(4, -1) for p in patterns])
    return GaussianMixture([0.15, 0.15, 0.1, 0.1] * 2, means, 0.05)


def colour_section(args) -> list[str]:
    gm, n = colour_mixture(), 500
    truth = gm.sample(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    images = truth.reshape(n, 3, 8, 8)
    gray = images.mean(1, keepdim=True)
    A = torch.kron(torch.full((1, 3), 1 / 3, dtype=torch.float64), torch.eye(64, dtype=torch.float64))
    lines = ["### Colorization (synthetic 3-channel 8x8 mixture, exact score, 500 images)", "",
             "| SDE | sampler | NFE | grey kept (max abs error) | hue TV vs exact posterior | colour RMSE given "
             "the hue | RMSE to the original | exact posterior: RMSE to the original | time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, sde in {"VP": sd.VPSDE(), "sub-VP": sd.SubVPSDE(), "VE": sd.VESDE(sigma_max=20.0)}.items():
        start = time.perf_counter()
        x, nfe = colorize(sde, gm.score_fn(sde), gray, sampler="pc", steps=300, generator=sd.SampleNoise(0, n),
                          return_nfe=True)  # fmt: skip
        seconds = time.perf_counter() - start
        weights, means, covs = gm.posterior(A, gray.reshape(n, -1))
        drawn = gm.assign(x.reshape(n, -1))
        freq = torch.bincount(drawn, minlength=gm.n_components).double() / n
        tv = 0.5 * float((freq - weights.mean(0)).abs().sum())
        given = float(((x - means[torch.arange(n), drawn].reshape(n, 3, 8, 8)) ** 2).mean().sqrt())
        to_truth = float(((x - images) ** 2).mean().sqrt())
        draws = sample_mixtures(weights, means, covs, torch.Generator().manual_seed(4)).reshape(n, 3, 8, 8)
        floor = float(((draws - images) ** 2).mean().sqrt())
        kept = float((x.mean(1, keepdim=True) - gray).abs().max())
        row = (f"| {name} | PC, 300 steps | {nfe} | {kept:.1e} | {tv:.3f} | {given:.3f} | {to_truth:.3f} | "
               f"{floor:.3f} | {seconds:.0f} |")  # fmt: skip
        lines.append(row)
        print(row, flush=True)
        if name == "VP":
            show = torch.cat([images[:10], gray[:10].expand(10, 3, 8, 8), x[:10]])
            save_image_grid(((show + 1) / 2).clamp(0, 1).float(), ROOT / "docs" / "colorized.png", nrow=10)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(OUT / "digits" / "checkpoints"))
    parser.add_argument("--classifier", default=str(OUT / "digits_classifier" / "checkpoints"))
    parser.add_argument("--cond", default=str(OUT / "digits_cond" / "checkpoints"))
    parser.add_argument("--per-class", type=int, default=100, help="guided samples per class (default 100)")
    parser.add_argument("--picture-scale", type=float, default=2.0, help="classifier-guidance scale pictured")
    parser.add_argument("--only", default="classifier,cfg,inpaint,colour")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"),
                        help="one file per section: guidance_<section>.md")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(2)
    only = args.only.split(",")
    cfg = load_for_inference(args.model)[0]
    test = load_dataset(cfg, "test")
    train = load_dataset(cfg, "train")
    f_test = digits_features((test.images.float() + 0.5) / test.levels)[0]
    train_unit = (train.images.float() + 0.5) / train.levels

    def shown(path: str) -> str:
        return str(Path(path).resolve().relative_to(ROOT)) if Path(path).resolve().is_relative_to(ROOT) else path

    head = (f"Controllable generation, {time.strftime('%Y-%m-%d')}, CPU, 2 threads; model {shown(args.model)}, "
            f"classifier {shown(args.classifier)}, label-conditional model {shown(args.cond)}; "
            "`python benchmarks/bench_guidance_digits.py`.")  # fmt: skip
    sections = {"classifier": lambda: classifier_section(args, f_test, train_unit),
                "cfg": lambda: cfg_section(args, f_test, train_unit),
                "inpaint": lambda: inpaint_section(args), "colour": lambda: colour_section(args)}  # fmt: skip
    for name in only:
        text = "\n".join([head, "", *sections[name](), ""])
        print(text)
        Path(args.out_dir, f"guidance_{name}.md").write_text(text)


if __name__ == "__main__":
    main()
