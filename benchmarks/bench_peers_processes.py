"""The new digits models through the peers' samplers: diffusers' flow-matching Euler on the rectified-flow model,
k-diffusion's samplers on the EDM model, beside scoresde's solvers at equal NFE, same network and same x_T.

    make bench-peers   # installs the peers (benchmark extra), then runs bench_peers.py and this script
    python benchmarks/bench_peers_processes.py [--rf outputs/digits_rf] [--edm outputs/digits_edm] [-n 1000]

Adapters (no retraining, no approximation beyond the peers' own):

* rectified flow, diffusers' ``FlowMatchEulerDiscreteScheduler`` (shift 1, its default sigmas from 1 to 1/N and a
  last step to 0): its model output is the velocity dx/dsigma = z - x0 of x = (1 - sigma) x0 + sigma z, which is
  scoresde's ``velocity`` prediction at t = sigma (read back from the score with ``output_from_score``, exactly
  the network's output); scoresde's process ends at T = 0.999, so diffusers' first evaluation, at sigma = 1, uses
  the network at t = T. Same x_T: diffusers starts from z, scoresde from its prior draw T z.
* EDM, k-diffusion's samplers with its Karras sigmas from 80 to 0.002 (rho 7) and a last step to 0: the
  denoiser D(x; sigma) is Tweedie's estimate at t = sigma (EDMSDE: time is the noise level). Same x_T: 80 z.

Every score evaluation is counted; FD in the shipped digits classifier's features and in pixels, against the
297 test digits, mean over seeds 0, 1, 2 (1,000 samples each).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde import metrics
from scoresde.build import build_score, data_shape, load_dataset
from scoresde.data import data_levels, to_levels
from scoresde.features import digits_features, load_digits_classifier
from scoresde.model import load_for_inference

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from bench_peers import load_k_diffusion  # noqa: E402


class Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rf", default=str(ROOT / "outputs" / "digits_rf" / "checkpoints"))
    parser.add_argument("--edm", default=str(ROOT / "outputs" / "digits_edm" / "checkpoints"))
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "peers_processes.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    net = load_digits_classifier()
    notes: list[str] = []
    lines = [f"# The new digits models through the peers' samplers ({time.strftime('%Y-%m-%d')})", "",
             f"`python benchmarks/bench_peers_processes.py`: {args.n} samples per seed, seeds 0-{args.seeds - 1}, "
             f"same x_T for every method; FD mean (range) over the seeds; torch {torch.__version__}, 2 threads.",
             ""]  # fmt: skip

    def setup(path: str):
        cfg, sde, model = load_for_inference(path)
        score = build_score(model, sde, cfg)
        levels, data_range = data_levels(cfg.data.dataset), tuple(cfg.data.data_range)
        test = load_dataset(cfg, "test")
        unit = lambda images: ((images.double() + 0.5) / levels).float()  # noqa: E731
        f_ref, p_ref = digits_features(unit(test.images), net)[0], unit(test.images).reshape(len(test.images), -1)
        train = load_dataset(cfg, "train").images[: args.n]
        floor = metrics.frechet_distance(digits_features(unit(train), net)[0], f_ref)

        def scores(x):
            q = unit(to_levels(x.float(), levels, data_range))
            return (metrics.frechet_distance(digits_features(q, net)[0], f_ref),
                    metrics.frechet_distance(q.reshape(len(q), -1).double(), p_ref.double()))  # fmt: skip

        return cfg, sde, score, scores, floor

    def table(title: str, rows: dict, floor: float) -> list[str]:
        out = [f"## {title}", "", f"Floor (1,000 training digits): FD {floor:.2f}.", "",
               "| method | library | NFE | FD | FD / floor | FD_pix | time per run (s) |",
               "|---|---|---|---|---|---|---|"]  # fmt: skip
        for (label, library, _), runs in rows.items():
            fds, pix = [r[0] for r in runs], [r[1] for r in runs]
            spread = f" ({min(fds):.2f}-{max(fds):.2f})" if len(fds) > 1 else ""
            out.append(f"| {label} | {library} | {runs[0][3]} | {statistics.fmean(fds):.2f}{spread} | "
                       f"{statistics.fmean(fds) / floor:.2f} | {statistics.fmean(pix):.2f} | "
                       f"{statistics.fmean(r[2] for r in runs):.1f} |")  # fmt: skip
            print(out[-1], flush=True)
        return [*out, ""]

    # -- rectified flow: diffusers' FlowMatchEulerDiscreteScheduler ----------------------------------------------
    if Path(args.rf).exists():
        cfg, sde, score, scores, floor = setup(args.rf)
        shape = (args.n, *data_shape(cfg))
        try:
            import diffusers
            from diffusers import FlowMatchEulerDiscreteScheduler
        except ImportError as err:
            FlowMatchEulerDiscreteScheduler = None
            notes.append(f"diffusers not installed ({err}); `make bench-peers` installs it")
        rows: dict = {}

        def ours(label, sampler, nfe, seed, **options):
            z = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
            counted = Counted(score)
            start = time.perf_counter()
            steps = nfe - 1 if sampler == "ode" else nfe  # Euler: nfe - 1 steps and the denoising evaluation
            x = sd.sample(sde, counted, None, sampler=sampler, steps=steps, x_init=sde.prior_std() * z, **options)
            rows.setdefault((label, "scoresde", nfe), []).append((*scores(x), time.perf_counter() - start,
                                                                  counted.calls))  # fmt: skip

        def flow_euler(nfe, seed):
            z = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
            scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
            scheduler.set_timesteps(nfe)
            calls = 0
            start = time.perf_counter()
            x = z.clone()
            with torch.no_grad():
                for timestep in scheduler.timesteps:
                    t = min(float(timestep) / 1000.0, sde.T)
                    s = score(x, torch.full((x.shape[0],), t))
                    calls += 1
                    velocity = sd.output_from_score(sde, x, t, s, "velocity")
                    x = scheduler.step(velocity, timestep, x).prev_sample
            label = f"FlowMatchEulerDiscrete (diffusers {diffusers.__version__})"
            rows.setdefault((label, "diffusers", nfe), []).append((*scores(x), time.perf_counter() - start, calls))

        for nfe in (10, 20):
            for seed in range(args.seeds):
                if FlowMatchEulerDiscreteScheduler is not None:
                    flow_euler(nfe, seed)
                ours("Euler on the flow (PF-ODE euler, uniform grid)", "ode", nfe, seed, method="euler")
                ours("DPM-Solver++ 2M (log-SNR grid)", "dpm_solver++", nfe, seed, order=2)
                ours("UniPC 2 (log-SNR grid)", "unipc", nfe, seed, order=2)
                ours("EDM Heun (karras grid)", "edm_heun", nfe, seed)
        ordered = dict(sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][1] != "diffusers")))
        lines += table("Rectified-flow model: diffusers' flow-matching Euler against scoresde", ordered, floor)
        lines += ["scoresde's `ode` Euler takes NFE - 1 grid steps and the final denoising evaluation; the fast "
                  "solvers' `steps` is the NFE.", ""]  # fmt: skip

    # -- EDM: k-diffusion -------------------------------------------------------------------------------------------
    if Path(args.edm).exists():
        cfg, sde, score, scores, floor = setup(args.edm)
        shape = (args.n, *data_shape(cfg))
        ks, tag = load_k_diffusion(notes)
        rows = {}

        def ours_edm(label, sampler, steps, seed, **options):
            z = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
            counted = Counted(score)
            start = time.perf_counter()
            x = sd.sample(sde, counted, None, sampler=sampler, steps=steps, x_init=sde.prior_std() * z,
                          generator=sd.SampleNoise(seed, args.n), **options)  # fmt: skip
            rows.setdefault((label, "scoresde", steps), []).append((*scores(x), time.perf_counter() - start,
                                                                    counted.calls))  # fmt: skip

        def denoiser_of(counted):
            def denoiser(x, sigma):
                t = sigma.reshape(-1).to(x.dtype).expand(x.shape[0]).clamp(max=sde.T)
                return sd.x0_from_score(sde, x, t, counted(x, t))

            return denoiser

        def kd(label, fn, n_sigmas, nfe, seed):
            z = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
            counted = Counted(score)
            sigmas = ks.get_sigmas_karras(n_sigmas, sde.sigma_min, sde.sigma_max, rho=7.0)
            torch.manual_seed(seed)  # k-diffusion's stochastic samplers draw from the global generator
            start = time.perf_counter()
            with torch.no_grad():
                x = fn(denoiser_of(counted), z * sde.sigma_max, sigmas, disable=True)
            rows.setdefault((label, tag, nfe), []).append((*scores(x), time.perf_counter() - start, counted.calls))

        for nfe in (10, 20):
            for seed in range(args.seeds):
                if ks is not None:
                    kd("sample_heun, Karras", ks.sample_heun, (nfe + 1) // 2, nfe, seed)
                    kd("sample_dpmpp_2m, Karras", ks.sample_dpmpp_2m, nfe, nfe, seed)
                    kd("sample_euler, Karras", ks.sample_euler, nfe, nfe, seed)
                    kd("sample_dpmpp_2m_sde, Karras", ks.sample_dpmpp_2m_sde, nfe, nfe, seed)
                ours_edm("EDM Heun (karras grid)", "edm_heun", nfe, seed)
                ours_edm("DPM-Solver++ 2M (karras grid)", "dpm_solver++", nfe, seed, order=2, grid="karras")
                ours_edm("DPM-Solver++ 2M (log-SNR grid)", "dpm_solver++", nfe, seed, order=2)
                ours_edm("UniPC 2 (log-SNR grid)", "unipc", nfe, seed, order=2)
                ours_edm("SDE-DPM-Solver++ 2M (log-SNR grid)", "sde_dpm_solver++", nfe, seed)
        ordered = dict(sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][1] == "scoresde")))
        lines += table("EDM model: k-diffusion's samplers against scoresde", ordered, floor)
        lines += ["k-diffusion's samplers take n Karras sigmas and a last step to 0: n evaluations (Heun: 2n - 1, "
                  "its last step is Euler); the NFE column counts every evaluation.", ""]  # fmt: skip
    lines += ["Notes: " + "; ".join(notes) if notes else "", ""]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
