"""Command-line tasks on a trained model: ``inpaint``, ``colorize``, ``encode``, ``decode``, ``interpolate``.

Each reads images from the checkpoint's dataset (``--split``, ``--first``, ``-n``) or from an
``--input`` .npz, checks every argument before loading the model, and writes a PNG grid
(inputs and results side by side) or an .npz (model-space arrays, see each command's help).
"""

from __future__ import annotations

import argparse
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from .._checks import check_in_range
from ..likelihood import MAX_POINTS
from .args import DEVICE_HELP, FORMATTER, positive_float, positive_int, progress_flag, seed, show_progress, step_count

# the missing region of each --missing choice, as (rows, columns) slices of an H x W image ("random" aside)
MISSING = {
    "bottom": lambda h, w: (slice(h // 2, None), slice(None)),
    "top": lambda h, w: (slice(None, h // 2), slice(None)),
    "left": lambda h, w: (slice(None), slice(None, w // 2)),
    "right": lambda h, w: (slice(None), slice(w // 2, None)),
    "center": lambda h, w: (slice(h // 4, h // 4 + h // 2), slice(w // 4, w // 4 + w // 2)),
    "random": None,
}
INVERSE_METHODS = ("projection", "ddnm", "pigdm")
DEFAULT_COUNT = 8  # images taken from the dataset when -n is not given


def add_parsers(sub) -> None:
    """Add the task commands to the CLI's subparsers."""
    fmt = FORMATTER

    def common(p: argparse.ArgumentParser, out_help: str, images: bool = True) -> None:
        p.add_argument("checkpoint", help="checkpoint file or checkpoints folder (the newest)")
        if images:
            p.add_argument("--input", default=None, metavar="FILE|DIR",
                           help="images to use: an image file (.png, .jpg, ...), a folder of them (resized and "
                                "centre-cropped to the model's size), or an .npz with 'samples' (model space, as "
                                "`scoresde sample` writes) or 'levels' (integer levels); default: the checkpoint's "
                                "dataset")  # fmt: skip
            p.add_argument("--split", default="test", choices=["train", "test"], help="dataset split (default test)")
            p.add_argument("--first", type=int, default=0, help="index of the first image used (default 0)")
            p.add_argument(
                "-n",
                type=positive_int,
                default=None,
                help=f"number of images (default {DEFAULT_COUNT} of the dataset, all of an --input)",
            )
            p.add_argument("--data-root", default=None, metavar="DIR",
                           help="the dataset's folder here (default: the checkpoint's data.root)")  # fmt: skip
        p.add_argument("--seed", type=seed, default=0, help="result i of a seed is the same in any batch")
        p.add_argument("--device", default="auto", help=DEVICE_HELP)
        p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
        p.add_argument("--out", required=True, help=out_help)
        progress_flag(p, "while running")

    def solver(p: argparse.ArgumentParser) -> None:
        p.add_argument("--method", default="projection", choices=INVERSE_METHODS,
                       help="projection (the paper's replacement method, default), ddnm or pigdm")  # fmt: skip
        p.add_argument("--sampler", default="pc", help="sampler name (default pc)")
        p.add_argument("--steps", type=step_count, default=None, help="steps (default: the config's)")
        p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
        p.add_argument("--batch-size", type=positive_int, default=None, help="default: the config's eval.batch_size")

    inp = sub.add_parser("inpaint", help="fill in missing pixels of images", formatter_class=fmt,
                         description="Inpaint images with the unconditional model: the known pixels are kept "
                                     "exactly and the result is denoised everywhere.",
                         epilog="example:\n  scoresde inpaint outputs/digits/checkpoints --missing bottom -n 16 "
                                "--out inpainted.png\n  scoresde inpaint ckpt.safetensors --mask-file mask.npy "
                                "--input photos.npz --out result.npz")  # fmt: skip
    common(inp, "output: .png (rows: originals, inputs with the missing pixels grey, results) or .npz "
                "(originals, mask, results)")  # fmt: skip
    inp.add_argument(
        "--missing",
        default="bottom",
        choices=list(MISSING),
        help="the region to fill in (default bottom: the bottom half); random: each pixel w.p. 1/2",
    )
    inp.add_argument(
        "--mask-file",
        default=None,
        metavar="MASK.npy",
        help="a 0/1 array (1 = known) of shape [H, W], [C, H, W] or [N, C, H, W]; overrides --missing",
    )
    solver(inp)

    col = sub.add_parser(
        "colorize",
        help="colour grey images (models of 2 or more channels)",
        formatter_class=fmt,
        description="Colorize images: their grey level (the channel mean) is kept exactly and the "
        "colour coordinates orthogonal to it are drawn from the model.",
        epilog="example:\n  scoresde colorize outputs/cifar/checkpoints -n 16 --out colour.png",
    )
    common(col, "output: .png (rows: originals, grey inputs, results) or .npz (originals, gray, results)")
    solver(col)

    enc = sub.add_parser(
        "encode",
        help="latent codes of images (probability-flow ODE)",
        formatter_class=fmt,
        description="Encode images to the latents x_T of the probability-flow ODE (adaptive RK45).",
        epilog="example:\n  scoresde encode outputs/digits/checkpoints -n 16 --out latents.npz\n"
        "  scoresde decode outputs/digits/checkpoints latents.npz --out decoded.png",
    )
    common(enc, "output .npz with 'latents' and the encoded 'inputs'")
    _tolerances(enc, positive_float)

    dec = sub.add_parser(
        "decode",
        help="images from latent codes (probability-flow ODE)",
        formatter_class=fmt,
        description="Decode latents (an .npz with 'latents', as `scoresde encode` writes) to images.",
        epilog="example:\n  scoresde decode outputs/digits/checkpoints latents.npz --out decoded.png",
    )
    common(dec, "output: .png grid or .npz ('samples' in model space and 'levels')", images=False)
    dec.add_argument("latents", help=".npz with an array 'latents'")
    _tolerances(dec, positive_float)

    itp = sub.add_parser("interpolate", help="decode the spherical path between the latents of image pairs",
                         formatter_class=fmt,
                         description="Encode n pairs of images (images first+2i and first+2i+1), interpolate their "
                                     "latents spherically and decode --points images along each path.",
                         epilog="example:\n  scoresde interpolate outputs/digits/checkpoints -n 4 --points 8 "
                                "--out path.png")  # fmt: skip
    common(itp, "output: .png (one pair per row) or .npz ('path' [points, n, ...])")
    itp.add_argument("--points", type=positive_int, default=8,
                     help=f"images along each path, ends included (2 to {MAX_POINTS:,})")  # fmt: skip
    _tolerances(itp, positive_float)


def _tolerances(p: argparse.ArgumentParser, positive_float) -> None:
    p.add_argument("--rtol", type=positive_float, default=1e-5, help="ODE relative tolerance (default 1e-5)")
    p.add_argument("--atol", type=positive_float, default=1e-5, help="ODE absolute tolerance (default 1e-5)")


# -- shared checks and inputs --------------------------------------------------------------------------------------
def _setup(args, suffixes: tuple[str, ...]):
    """Every check before the model is loaded: output, device, checkpoint header (the checkpoint is opened once).
    Returns ``(checkpoint, cfg, device)``."""
    from ..checkpoint import Checkpoint
    from ..devices import pick_device
    from ..plotting import check_output_file
    from ..validation import check_config

    check_output_file(args.out, suffixes, "--out")
    device = pick_device(args.device)
    ckpt = Checkpoint.open(args.checkpoint, data_root=getattr(args, "data_root", None))
    return ckpt, check_config(ckpt.config, training=False, data=False), device


def _images(args, cfg) -> torch.Tensor:
    """``n`` images in model space from ``--input`` or the dataset (levels mapped to bin centres)."""
    from ..build import data_shape, load_dataset
    from ..data import IMAGE_SUFFIXES, data_levels, load_image_file, load_image_folder

    shape = data_shape(cfg)
    if cfg.data.dataset == "toy":
        raise ValueError(f"{args.command} needs an image checkpoint; this one models 2-D toy data")
    if args.first < 0:
        raise ValueError(f"--first must be >= 0, got {args.first}")
    lo, hi = cfg.data.data_range
    source = None if args.input is None else Path(args.input)
    if source is not None and (source.is_dir() or source.suffix.lower() in IMAGE_SUFFIXES):
        if not source.exists():
            raise FileNotFoundError(f"--input {source} not found")
        read = load_image_folder if source.is_dir() else load_image_file
        pictures = read(source, shape[-1], shape[0])  # 8-bit pixels at their bin centres
        x = lo + (hi - lo) * (pictures.images.float() + 0.5) / pictures.levels
        where = f"--input {source}"
    elif source is not None:
        if source.suffix.lower() != ".npz":
            raise ValueError(f"--input {source} must be an image file ({', '.join(IMAGE_SUFFIXES)}), a folder of "
                             "images or an .npz")  # fmt: skip
        with load_arrays(args.input, "--input") as arrays:
            if "samples" in arrays:
                x = torch.as_tensor(np.asarray(arrays["samples"], dtype=np.float32))
                check_in_range(x, (lo, hi), f"--input {args.input} 'samples'")
            elif "levels" in arrays:
                levels = data_levels(cfg.data.dataset)
                k = _levels_array(arrays["levels"], levels, f"--input {args.input} 'levels'")
                x = lo + (hi - lo) * (k + 0.5) / levels
            else:
                raise ValueError(f"--input {args.input} has neither a 'samples' nor a 'levels' array")
        where = f"--input {args.input}"
    else:
        data = load_dataset(cfg, args.split)
        x = lo + (hi - lo) * (data.images.float() + 0.5) / data.levels
        where = f"the {args.split} split ({cfg.data.dataset})"
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"{where} has images of shape {tuple(x.shape[1:])}; the model takes {shape}")
    if args.n is None:
        args.n = max(x.shape[0] - args.first, 1) if source is not None else DEFAULT_COUNT
    if args.first + args.n > x.shape[0]:
        raise ValueError(f"{where} has {x.shape[0]} images; --first {args.first} -n {args.n} asks for more")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{where} contains NaN or inf")
    return x[args.first : args.first + args.n]


def load_arrays(path: str | Path, what: str, archive: bool = True):
    """``np.load`` of an .npz (``archive``) or an .npy without pickles, with a one-line error of ours for anything
    else (never numpy's advice to load the file unsafely)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} not found") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        pickled = "pickle" in str(err)
        why = "it holds pickled Python objects, which scoresde never loads" if pickled else "not a NumPy file"
        raise ValueError(f"{what} {path} is not a NumPy .npy/.npz array file ({why})") from None
    if archive != isinstance(loaded, np.lib.npyio.NpzFile):
        if archive:
            raise ValueError(f"{what} {path} must be an .npz archive of named arrays, got a single .npy array")
        loaded.close()
        raise ValueError(f"{what} {path} must be a single .npy array, got an .npz archive")
    return loaded


def _levels_array(values: np.ndarray, levels: int, name: str) -> torch.Tensor:
    """Integer grey levels ``0 .. levels - 1`` as a float tensor; a one-line error for anything else."""
    if values.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold numbers (integer levels 0 to {levels - 1}), got dtype {values.dtype}")
    k = torch.as_tensor(values.astype(np.float64))
    whole = bool((k == k.round()).all())
    if k.numel() and not (whole and bool(((k >= 0) & (k <= levels - 1)).all())):
        got = f"values in [{float(k.min()):g}, {float(k.max()):g}]" + ("" if whole else ", not all integers")
        raise ValueError(f"{name} must hold integer levels 0 to {levels - 1} (this model's data has {levels}), "
                         f"got {got}")  # fmt: skip
    return k.float()


def _mask(args, shape: tuple[int, ...], n: int) -> torch.Tensor:
    """The 0/1 mask (1 = known) of ``--mask-file`` or ``--missing``, shaped ``[1 or n, C, H, W]``."""
    c, h, w = shape
    if args.mask_file is not None:
        m = load_arrays(args.mask_file, "--mask-file", archive=False)
        if m.dtype.kind not in "iufb":
            raise ValueError(f"--mask-file {args.mask_file} must be one .npy array of 0s and 1s")
        m = torch.as_tensor(m.astype(np.float32))
        while m.ndim < 4:
            m = m[None]
        if m.shape[0] not in (1, n) or m.shape[1] not in (1, c) or tuple(m.shape[2:]) != (h, w):
            raise ValueError(f"--mask-file {args.mask_file} has shape {tuple(m.shape)}; expected [H, W], [C, H, W] "
                             f"or [N, C, H, W] with H, W = {h}, {w}")  # fmt: skip
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"--mask-file {args.mask_file} must hold only 0 (missing) and 1 (known)")
        return m.expand(m.shape[0], c, h, w).contiguous()
    region = MISSING[args.missing]
    if region is None:  # random: each pixel (all its channels) missing with probability 1/2, seeded
        gen = torch.Generator().manual_seed(args.seed)
        return (torch.rand(n, 1, h, w, generator=gen) < 0.5).float().expand(n, c, h, w).contiguous()
    m = torch.ones(1, c, h, w)
    m[(..., *region(h, w))] = 0
    return m


def _solver_options(args) -> dict:
    from ..sampling import is_adaptive
    from ..sampling.options import parse_sampler_options

    options = parse_sampler_options(args.sampler, args.option)
    if is_adaptive(args.sampler, options):
        raise ValueError("inpaint and colorize need a fixed-grid sampler (the adaptive rk45 has no steps to "
                         "project after); use --option method=heun|rk4, or pc, ddim, euler_maruyama, ...")  # fmt: skip
    return options


def _save(out: Path, cfg, rows: list[torch.Tensor], arrays: dict[str, torch.Tensor]) -> Path:
    """``rows`` of images (model space) as one PNG grid, one row each; or ``arrays`` as an .npz."""
    from ..data import data_levels, to_picture
    from ..plotting import atomic_write, save_image_grid

    out = Path(out)
    if out.suffix == ".npz":
        plain = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
        atomic_write(out, lambda handle: np.savez(handle, **plain))
        return out
    rng = tuple(cfg.data.data_range)
    shown = [to_picture(r[:64].detach().cpu(), data_levels(cfg.data.dataset), rng) for r in rows]
    channels = max(r.shape[1] for r in shown)
    grid = torch.cat([r.expand(r.shape[0], channels, *r.shape[2:]) for r in shown])
    return save_image_grid(grid, out, nrow=shown[0].shape[0] if len(shown) > 1 else None)


def _model(args, ckpt, device):
    """The opened checkpoint's model (its tensors read once): ``(config, sde, score model)``."""
    model = ckpt.load(ema=not args.no_ema, device=device)
    return model.config, model.sde, model


# -- the commands ---------------------------------------------------------------------------------------------------
def inpaint_command(args) -> int:
    from ..build import data_shape
    from ..inverse import inpaint
    from ..noise import SampleNoise

    ckpt, cfg, device = _setup(args, (".png", ".npz"))
    x = _images(args, cfg)
    mask = _mask(args, data_shape(cfg), x.shape[0])
    options = _solver_options(args)
    cfg, sde, score = _model(args, ckpt, device)
    start = time.perf_counter()
    result, nfe = inpaint(sde, score, x.to(device), mask.to(device), method=args.method, sampler=args.sampler,
                          steps=args.steps or cfg.sampling.steps, generator=SampleNoise(args.seed, x.shape[0]),
                          batch_size=args.batch_size or cfg.eval.batch_size, progress=show_progress(args.progress),
                          return_nfe=True, sampler_options=options)  # fmt: skip
    shown_input = torch.where(mask.bool(), x, torch.full_like(x, sum(cfg.data.data_range) / 2))
    out = _save(args.out, cfg, [x, shown_input, result], {"originals": x, "mask": mask.expand_as(x), "results": result})
    print(f"inpainted {x.shape[0]} images ({args.method}, {args.sampler}, {nfe} NFE, "
          f"{time.perf_counter() - start:.1f} s) -> {out}")  # fmt: skip
    return 0


def colorize_command(args) -> int:
    from ..inverse import colorize
    from ..noise import SampleNoise

    ckpt, cfg, device = _setup(args, (".png", ".npz"))
    if cfg.data.channels < 2:
        raise ValueError(f"colorize needs a model of colour images; this checkpoint has {cfg.data.channels} channel")
    x = _images(args, cfg)
    gray = x.mean(1, keepdim=True)
    options = _solver_options(args)
    cfg, sde, score = _model(args, ckpt, device)
    start = time.perf_counter()
    result, nfe = colorize(sde, score, gray.to(device), channels=cfg.data.channels, method=args.method,
                           sampler=args.sampler, steps=args.steps or cfg.sampling.steps,
                           generator=SampleNoise(args.seed, x.shape[0]),
                           batch_size=args.batch_size or cfg.eval.batch_size, progress=show_progress(args.progress),
                           return_nfe=True, sampler_options=options)  # fmt: skip
    out = _save(args.out, cfg, [x, gray, result], {"originals": x, "gray": gray, "results": result})
    error = float(((result.cpu() - x) ** 2).mean().sqrt())
    print(f"colorized {x.shape[0]} images ({args.method}, {args.sampler}, {nfe} NFE, "
          f"{time.perf_counter() - start:.1f} s; RMSE to the originals {error:.3f}) -> {out}")  # fmt: skip
    return 0


def encode_command(args) -> int:
    from ..likelihood import encode

    ckpt, cfg, device = _setup(args, (".npz",))
    x = _images(args, cfg)
    cfg, sde, score = _model(args, ckpt, device)
    z, nfe = encode(sde, score, x.to(device), rtol=args.rtol, atol=args.atol)
    out = _save(args.out, cfg, [], {"latents": z, "inputs": x})
    print(f"encoded {x.shape[0]} images ({nfe} NFE) -> {out}")
    return 0


def decode_command(args) -> int:
    from ..build import data_shape
    from ..likelihood import decode

    ckpt, cfg, device = _setup(args, (".png", ".npz"))
    with load_arrays(args.latents, "latents") as arrays:
        if "latents" not in arrays:
            raise ValueError(f"{args.latents} has no 'latents' array (write one with scoresde encode)")
        z = torch.as_tensor(np.asarray(arrays["latents"], dtype=np.float32))
    if tuple(z.shape[1:]) != data_shape(cfg) or z.shape[0] < 1:
        raise ValueError(f"{args.latents} holds latents of shape {tuple(z.shape)}; the model needs [N, "
                         f"{', '.join(map(str, data_shape(cfg)))}]")  # fmt: skip
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{args.latents} contains NaN or inf")
    cfg, sde, score = _model(args, ckpt, device)
    x, nfe = decode(sde, score, z.to(device), rtol=args.rtol, atol=args.atol)
    out = _save(args.out, cfg, [x], {"samples": x})
    print(f"decoded {z.shape[0]} latents ({nfe} NFE) -> {out}")
    return 0


def interpolate_command(args) -> int:
    from ..likelihood import interpolate

    ckpt, cfg, device = _setup(args, (".png", ".npz"))
    if not 2 <= args.points <= MAX_POINTS:
        raise ValueError(f"--points must be from 2 (the two ends) to {MAX_POINTS:,}, got {args.points:,}")
    n_pairs = DEFAULT_COUNT // 2 if args.n is None else args.n
    args.n = 2 * n_pairs
    x = _images(args, cfg)
    cfg, sde, score = _model(args, ckpt, device)
    path_x, nfe = interpolate(sde, score, x[0::2].to(device), x[1::2].to(device), n=args.points, rtol=args.rtol,
                              atol=args.atol)  # fmt: skip
    rows = list(path_x.transpose(0, 1))  # one pair per row, the path along it
    out = _save(args.out, cfg, rows, {"path": path_x, "inputs": x})
    print(f"interpolated {n_pairs} pairs over {args.points} points ({nfe} NFE) -> {out}")
    return 0


COMMANDS = {
    "inpaint": inpaint_command,
    "colorize": colorize_command,
    "encode": encode_command,
    "decode": decode_command,
    "interpolate": interpolate_command,
}
