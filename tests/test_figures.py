"""The walkthrough's figures compute what their captions say, checked against closed forms (not pixels)."""

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde import figures
from scoresde.cli import main
from scoresde.toy import demo_mixture, mixture_moments


def _noised_moments(mixture, sde, t):
    """Mean and covariance of x_t = alpha x_0 + sigma z for the mixture (closed form)."""
    alpha, sigma = (float(c) for c in sde.marginal_coeffs(t, torch.zeros(1, 2, dtype=torch.float64)))
    covs = torch.diag_embed(mixture.stds**2 * torch.ones_like(mixture.means))
    mean, cov = mixture_moments(mixture.weights[None], mixture.means[None], covs)
    return alpha * mean[0], alpha**2 * cov[0] + sigma**2 * torch.eye(2, dtype=torch.float64)


def test_the_forward_clouds_have_the_noised_mixture_moments():
    mixture, sde = demo_mixture(), sd.VPSDE()
    fig = figures.forward_clouds(mixture, sde, [0.0, 0.2, 1.0], n=40_000, path_steps=50)
    for t, cloud in zip(fig.data["times"], fig.data["clouds"], strict=True):
        mean, cov = _noised_moments(mixture, sde, t)
        x = torch.as_tensor(cloud)
        assert torch.allclose(x.mean(0), mean, atol=0.04), t
        assert torch.allclose(torch.cov(x.T), cov, atol=0.08, rtol=0.03), t
    assert fig.data["path"].shape == (51, 2) and np.isfinite(fig.data["path"]).all()


def test_the_score_arrows_are_the_gradient_of_the_noised_log_density():
    mixture, sde = demo_mixture(), sd.VESDE(sigma_min=0.01, sigma_max=50.0)
    fig = figures.score_field(mixture, sde, [0.3, 0.65], points=9)
    grid = torch.as_tensor(fig.data["grid"])
    h = 1e-5
    for t, arrows in zip(fig.data["times"], fig.data["arrows"], strict=True):
        tt = torch.full((grid.shape[0],), t, dtype=torch.float64)
        numeric = torch.stack([(mixture.log_prob(grid + h * e, tt, sde) - mixture.log_prob(grid - h * e, tt, sde))
                               / (2 * h) for e in torch.eye(2, dtype=torch.float64)], 1)  # fmt: skip
        torch.testing.assert_close(torch.as_tensor(arrows), numeric, rtol=1e-5, atol=1e-5)
    assert fig.data["sigmas"][0] < 0.2 < 2 < fig.data["sigmas"][1]


def test_the_variance_curves_explode_stay_at_one_and_dip_to_three_quarters():
    curves = figures.variances().data["curves"]
    np.testing.assert_allclose(curves["VP"], 1.0, atol=1e-12)
    assert (curves["sub-VP"] <= curves["VP"] + 1e-12).all()
    assert curves["sub-VP"].min() == pytest.approx(0.75, abs=2e-3)  # alpha^2 + (1 - alpha^2)^2, least at alpha^2 = 1/2
    assert curves["VE"][-1] == pytest.approx(1 + 50.0**2) and (np.diff(curves["VE"]) > 0).all()


def test_sde_and_ode_paths_differ_but_share_their_marginals():
    mixture, sde = demo_mixture(), sd.VPSDE()
    fig = figures.same_marginals(mixture, sde, n=8000, steps=200)
    times = np.asarray(fig.data["times"])
    for target in (0.5, 0.25):
        i = int(np.argmin(np.abs(times - target)))
        mean, cov = _noised_moments(mixture, sde, float(times[i]))
        for key in ("sde", "ode"):
            x = torch.as_tensor(fig.data[key][i])
            assert torch.allclose(x.mean(0), mean, atol=0.06), (key, target)
            assert torch.allclose(torch.cov(x.T), cov, atol=0.12, rtol=0.05), (key, target)
    gap = np.linalg.norm(fig.data["sde"][-1] - fig.data["ode"][-1], axis=1)
    assert np.median(gap) > 0.3  # the same start, different paths


def test_the_corrector_relaxes_a_tight_cloud_onto_the_noised_density():
    mixture, sde = demo_mixture(), sd.VPSDE()
    fig = figures.corrector_relaxation(mixture, sde, counts=(0, 3, 100), n=6000)
    target = torch.as_tensor(fig.data["target"])
    labels = mixture.assign(target)

    def spread(cloud):  # RMS distance to the own mode's centre, over the target's spread
        x = torch.as_tensor(cloud)
        centres = torch.stack([x[mixture.assign(x) == k].mean(0) for k in range(3)])
        tcentres = torch.stack([target[labels == k].mean(0) for k in range(3)])
        own = (x - centres[mixture.assign(x)]).norm(dim=1).pow(2).mean().sqrt()
        ref = (target - tcentres[labels]).norm(dim=1).pow(2).mean().sqrt()
        return float(own / ref)

    ratios = [spread(fig.data["clouds"][m]) for m in (0, 3, 100)]
    assert ratios[0] < 0.45 and ratios[0] < ratios[1] < ratios[2]
    assert ratios[2] == pytest.approx(1.0, abs=0.06)


def test_guidance_funnels_every_particle_to_its_class():
    mixture, sde = demo_mixture(), sd.VPSDE()
    runs = figures.guided_paths(mixture, sde, n=600, steps=200).data["runs"]
    free = torch.bincount(mixture.assign(torch.as_tensor(runs[None][-1])), minlength=3).double() / 600
    assert torch.allclose(free, mixture.weights, atol=0.06)  # unguided: the mixture's weights
    for k in range(3):
        share = float((mixture.assign(torch.as_tensor(runs[k][-1])) == k).double().mean())
        assert share > 0.97, (k, share)


def test_the_command_writes_every_figure(tmp_path, capsys):
    assert main(["figures", "--out", str(tmp_path), "--only", "variances", "corrector"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrector.gif", "corrector.png", "variances.png"]
    assert main(["figures", "--out", str(tmp_path), "--only", "nothing"]) == 2
    assert "invalid choice" in capsys.readouterr().err
