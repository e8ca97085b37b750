"""Issue 17's silent wrong results and unclear messages, each now a correct result or a clear early error."""

import importlib

import pytest
import torch

import scoresde as sd
from scoresde.cli import main
from scoresde.toy import demo_mixture


class Conditional(torch.nn.Module):
    """A class-conditional 'network' (the exact score of the mixture ignores the label) for guidance checks."""

    num_classes = 3

    def __init__(self, mixture, sde):
        super().__init__()
        self.score = mixture.score_fn(sde)
        self.sde = sde

    def forward(self, x, label, y):
        sigma = self.sde.marginal_coeffs(label, x)[1][:, None]
        return -sigma * self.score(x, label)


class Pointwise(torch.nn.Module):
    """A one-layer 'network' net(x, t) for checks that need a ScoreModel but no trained weights."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, x, t):
        return self.conv(x)


def test_guidance_weights_are_bounded():
    sde, mixture = sd.VPSDE(), demo_mixture()
    score = sd.ModelScore(Conditional(mixture, sde), sde)
    with pytest.raises(ValueError, match="scale must be at most 1000"):
        sd.classifier_free_guided(score, 1, 1e30)
    with pytest.raises(ValueError, match="scale must be at most 1000"):
        sd.classifier_guided(mixture.score_fn(sde), mixture.classifier_fn(sde), 1, 1e30)
    with pytest.raises(ValueError, match="scale must be at most 1000"):
        sd.solve_inverse(sde, mixture.score_fn(sde), torch.zeros(4, 1), torch.tensor([[1.0, 0.0]]), noise_std=0.1,
                         method="dps", scale=1e30)  # fmt: skip
    assert main(["sample", "missing", "--class", "1", "--guidance", "1e30"]) == 2  # rejected by the parser


def test_a_classifier_returning_probabilities_is_refused():
    sde, mixture = sd.VPSDE(), demo_mixture()
    exact = mixture.classifier_fn(sde)
    guided = sd.classifier_guided(mixture.score_fn(sde), lambda x, t: exact(x, t).exp(), 2)
    with pytest.raises(ValueError, match="must return log-probabilities"):
        sd.sample(sde, guided, (8, 2), sampler="ddim", steps=5)
    fine = sd.classifier_guided(mixture.score_fn(sde), exact, 2)
    x = sd.sample(sde, fine, (400, 2), sampler="ddim", steps=100, generator=torch.Generator().manual_seed(0))
    assert float((mixture.assign(x) == 2).double().mean()) > 0.95  # the exact classifier steers to class 2


def test_counts_and_shapes_must_be_integers():
    sde, mixture = sd.VPSDE(), demo_mixture()
    with pytest.raises(TypeError, match="shape must be a sequence of ints"):
        sd.sample(sde, mixture.score_fn(sde), (10, 2.7), sampler="ddim", steps=3)
    from scoresde.evaluate import evaluate

    with pytest.raises(ValueError, match="n must be an integer, got 10.7"):
        evaluate("missing.safetensors", n=10.7)


def test_option_types_are_checked_in_the_api():
    sde, mixture = sd.VPSDE(), demo_mixture()
    with pytest.raises(ValueError, match="probability_flow must be True or False for sampler 'euler_maruyama'"):
        sd.sample(sde, mixture.score_fn(sde), (4, 2), sampler="euler_maruyama", steps=3, probability_flow="no")
    with pytest.raises(ValueError, match="corrector_steps must be >= 0 for sampler 'pc', got 1.5"):
        sd.sample(sde, mixture.score_fn(sde), (4, 2), sampler="pc", steps=3, corrector_steps=1.5)
    own = sd.sampling.euler_maruyama_step  # a predictor function of one's own still passes
    assert sd.sample(sde, mixture.score_fn(sde), (4, 2), sampler="pc", steps=3, predictor=own).shape == (4, 2)


@pytest.mark.parametrize(("command", "said"), [("sample", "nothing was written"),
                                               ("train", "checkpoints written so far are intact")])  # fmt: skip
def test_ctrl_c_says_what_was_kept(command, said, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    cli_main = importlib.import_module("scoresde.cli.main")  # the module (scoresde.cli.main is the function)
    monkeypatch.setitem(cli_main.COMMANDS, command, interrupted)
    args = ["sample", "ckpt"] if command == "sample" else ["train", "toy_mixture", "--workdir", "w"]
    assert main(args) == 130
    assert capsys.readouterr().err.strip() == f"scoresde {command}: interrupted ({said})"


def test_inputs_outside_the_models_range_are_refused():
    """A ScoreModel knows its data range: inpaint and colorize refuse pixels or levels given in place of model-space
    values (a plain score function has no range, so nothing is checked)."""
    sde = sd.VPSDE()
    model = sd.ScoreModel(Pointwise(), sde, data_shape=(3, 4, 4), data_range=(-1.0, 1.0))
    gray = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"gray has values in \[1e\+06, 1e\+06\], outside the model's data range"):
        sd.colorize(model, gray + 1e6, steps=2)
    with pytest.raises(ValueError, match="x_known has values in"):
        sd.inpaint(model, torch.full((2, 3, 4, 4), 200.0), torch.ones(1, 3, 4, 4), steps=2)
    assert sd.colorize(model, gray + 1.2, steps=2, sampler="ddim").shape == (2, 3, 4, 4)  # within the slack


def test_noiseless_measurements_that_no_sample_meets_are_refused():
    sde, mixture = sd.VPSDE(), demo_mixture()
    with pytest.raises(ValueError, match=r"no x satisfies A x = y for measurement row 0 .*noise_std > 0"):
        sd.solve_inverse(sde, mixture.score_fn(sde), torch.full((4, 1), -1.5), torch.zeros(1, 2), steps=5)
    A = torch.tensor([[1.0, 1.0]])  # consistent: x1 + x2 = y has solutions
    x = sd.solve_inverse(sde, mixture.score_fn(sde), torch.full((4, 1), -1.5), A, steps=5)
    torch.testing.assert_close(x.sum(1), torch.full((4,), -1.5))


def test_a_resume_with_another_dataset_or_recipe_is_refused(tmp_path):
    from scoresde.config import load_config
    from scoresde.train import train

    base = ["training.n_iters=4", "training.snapshot_every=2", "training.batch_size=16", "data.toy_size=64"]
    train(load_config("toy_mixture", base), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"another config \(data.toy \('mixture' -> 'moons'\)\); a resume may change"):
        train(load_config("toy_mixture", [*base, "data.toy=moons"]), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"training.lr .*training.n_iters"):
        train(load_config("toy_mixture", [*base, "training.lr=0.5"]), tmp_path, progress=False)
    longer = train(load_config("toy_mixture", [*base, "training.n_iters=6", "training.log_every=1"]), tmp_path,
                   progress=False)  # fmt: skip
    assert longer.name == "checkpoint_00000006.safetensors"
