"""SmoothedClassifier: the Python API for models in memory (docs/design.md section 5) on stage A's engine."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from csrs_core import CSRSError
from csrs_core.certification.bounds import max_certifiable_radius
from csrs_core.certification.certificates import certify_from_counts
from csrs_core.certification.cost import CostMatrix
from csrs_core.sampling.counts import sample_counts
from csrs_core.sampling.smoothed import ABSTAIN, SmoothedClassifier, predict_from_counts

M = 4
CPU = torch.device("cpu")


def tiny_cnn(seed=0, m=M):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(24, m))


class Constant(nn.Module):
    """Always predicts class `y`."""

    def __init__(self, m, y):
        super().__init__()
        self.m, self.y = m, y

    def forward(self, x):
        out = x.new_zeros(x.shape[0], self.m, dtype=torch.float32)
        out[:, self.y] = 1.0
        return out


class CoinFlip(nn.Module):
    """Class 1 when the first pixel exceeds 0.5, else class 0: at a pixel of exactly 0.5 under
    Gaussian noise, a fair coin between the two classes."""

    def forward(self, x):
        d = x[:, 0, 0, 0].float() - 0.5
        return torch.stack([-d, d, torch.full_like(d, -9.0)], dim=1)


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (6, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


IDS = np.array([5, 17, 3, 100, 2, 9])


def test_counts_are_stage_a_counts_and_do_not_depend_on_batch(images):
    model = tiny_cnn()
    ref0, ref = sample_counts(model, images, IDS, M, 0.5, 12, 70, 64, 3, CPU, "fp32")
    for batch in (64, 7, "auto"):
        smooth = SmoothedClassifier(model, num_classes=M, sigma=0.5, device="cpu", precision="fp32", batch=batch)
        c0, c = smooth.sample(images, n0=12, n=70, seed=3, indices=IDS)
        assert c0.dtype == np.int64 and c.shape == (6, M)
        np.testing.assert_array_equal(c0, ref0)
        np.testing.assert_array_equal(c, ref)
    assert (c0.sum(1) == 12).all() and (c.sum(1) == 70).all()
    # an example's counts depend on its own id only, not on the others sampled with it
    _, alone = smooth.sample(images[2:3], n0=12, n=70, seed=3, indices=IDS[2:3])
    np.testing.assert_array_equal(alone[0], ref[2])
    # float images k/255 are the same images
    _, from_float = smooth.sample(images.float() / 255, n0=12, n=70, seed=3, indices=IDS)
    np.testing.assert_array_equal(from_float, ref)
    assert smooth.last_plan["precision"] == "fp32" and smooth.last_plan["device"] == "cpu"


def test_another_seed_or_example_id_draws_other_noise(images):
    smooth = SmoothedClassifier(tiny_cnn(), num_classes=M, sigma=0.5, device="cpu", precision="fp32")
    _, a = smooth.sample(images, n0=10, n=200, seed=0)
    _, a_again = smooth.sample(images, n0=10, n=200, seed=0)
    _, b = smooth.sample(images, n0=10, n=200, seed=1)
    _, shifted = smooth.sample(images, n0=10, n=200, seed=0, indices=np.arange(1, 7))
    np.testing.assert_array_equal(a, a_again)
    assert a.max() < 200  # the noise moves the predictions, so other noise gives other counts
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, shifted)


def test_certify_is_certify_from_counts_on_the_sampled_counts(images):
    smooth = SmoothedClassifier(tiny_cnn(), num_classes=M, sigma=0.25, device="cpu", precision="fp32")
    labels = np.array([0, 1, 2, 3, 0, 1])
    cost = CostMatrix.seedwise(M, [1])
    table = smooth.certify(images, labels, cost, n0=10, n=100, alpha=0.01, seed=2, mode="paper")
    c0, c = smooth.sample(images, n0=10, n=100, seed=2)
    expected = certify_from_counts(c0, c, labels, cost, sigma=0.25, alpha=0.01, mode="paper")
    assert table.equals(expected)
    assert table.attrs["mode"] == "paper" and table.attrs["n"] == 100 and table.attrs["precision"] == "fp32"
    # a 0/1 array and the CLI's preset string are accepted for the cost matrix
    assert smooth.certify(images, labels, cost.matrix.astype(int), n0=10, n=100, alpha=0.01, seed=2,
                          mode="paper").equals(expected)
    assert smooth.certify(images, labels, "seedwise:1", n0=10, n=100, alpha=0.01, seed=2,
                          mode="paper").equals(expected)


def test_a_constant_model_certifies_everything_at_the_radius_cap(images):
    smooth = SmoothedClassifier(Constant(M, 2), num_classes=M, sigma=0.5, device="cpu", precision="fp32")
    n, alpha = 300, 0.001
    table = smooth.certify(images, np.full(6, 2), CostMatrix.overall(M), n0=20, n=n, alpha=alpha, seed=0)
    assert (table.pred_std == 2).all() and (table.pred == 2).all() and table.sensitive.all()
    np.testing.assert_allclose(table.r1, max_certifiable_radius(0.5, n, alpha))
    # sound mode: R1(α/2) beats R2 when every sample agrees
    np.testing.assert_allclose(table.cost_robust_radius, max_certifiable_radius(0.5, n, alpha / 2))
    # the prediction costs when the label is another class whose row makes 2 costly
    wrong = smooth.certify(images, np.full(6, 0), CostMatrix.overall(M), n0=20, n=n, alpha=alpha, seed=0)
    assert (wrong.cost_robust_radius == -np.inf).all() and (wrong.pred == -1).all()


def test_predict_constant_model_and_coin_flip():
    u8 = torch.zeros((3, 3, 4, 4), dtype=torch.uint8)
    const = SmoothedClassifier(Constant(M, 3), num_classes=M, sigma=0.25, device="cpu", precision="fp32")
    assert const.predict(u8, n=100, alpha=0.001, seed=0).tolist() == [3, 3, 3]
    half = torch.full((5, 3, 4, 4), 0.5)  # exactly representable: the coin is fair
    coin = SmoothedClassifier(CoinFlip(), num_classes=3, sigma=0.25, device="cpu", precision="fp32")
    _, counts = coin.sample(half, n0=1, n=400, seed=0)
    assert (counts[:, :2].min(1) > 120).all() and (counts[:, 2] == 0).all()
    assert coin.predict(half, n=400, alpha=0.001, seed=0).tolist() == [ABSTAIN] * 5
    # predict draws the first n copies of the stream that sample's selection sample uses
    first, _ = coin.sample(half, n0=400, n=1, seed=0)
    np.testing.assert_array_equal(predict_from_counts(first, 0.001), coin.predict(half, n=400, alpha=0.001))
    # far from the boundary the coin is biased enough to answer
    assert coin.predict(torch.full((2, 3, 4, 4), 0.9), n=400, alpha=0.001).tolist() == [1, 1]


def test_predict_p_value_is_scipy_binomtest():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 40, size=(300, 3))
    counts[:, 0] += 1                          # n ≥ 1 copies per example
    counts[:20, 1] = counts[:20, 0]            # ties between the top two
    counts[20:30, 1:] = 0                      # one class only
    for alpha in (0.001, 0.05, 0.5):
        pred = predict_from_counts(counts, alpha)
        for row, p in zip(counts, pred):
            top = int(np.argmax(row))
            n_a, n_b = row[top], np.sort(row)[-2]
            expected = top if binomtest(int(n_a), int(n_a + n_b), 0.5).pvalue <= alpha else ABSTAIN
            assert p == expected, (row, alpha)


def test_bad_input_is_refused_with_a_message_naming_it(images):
    smooth = SmoothedClassifier(tiny_cnn(), num_classes=M, sigma=0.25, device="cpu", precision="fp32")
    cases = [
        (lambda: smooth.sample(images.float(), n0=1, n=1), "[0, 1]"),           # 0..255 floats
        (lambda: smooth.sample(images.float() / 255 - 0.5, n0=1, n=1), "[0, 1]"),  # normalised already
        (lambda: smooth.sample(torch.full((1, 3, 4, 4), float("nan")), n0=1, n=1), "non-finite"),
        (lambda: smooth.sample(images[0], n0=1, n=1), "images[None]"),
        (lambda: smooth.sample(images.int(), n0=1, n=1), "uint8"),
        (lambda: smooth.sample(images, n0=10, n=0), "--n = 0"),
        (lambda: smooth.sample(images, n0=0, n=10), "--n0 = 0"),
        (lambda: smooth.predict(images, n=10, alpha=1.0), "--alpha = 1.0"),
        (lambda: smooth.sample(images, n0=1, n=1, indices=[0, 1]), "indices"),
        (lambda: smooth.certify(images, [0] * 6, CostMatrix.overall(M + 1), n0=1, n=1), "num_classes = 4"),
        (lambda: smooth.certify(images, [0, 1, 2, 3, 4, 0], CostMatrix.overall(M), n0=1, n=1), "labels"),
        (lambda: smooth.certify(images, [0] * 6, CostMatrix.overall(M), n0=1, n=1, mode="loose"), "--mode"),
        (lambda: SmoothedClassifier(tiny_cnn(m=5), num_classes=M, sigma=0.25, device="cpu").sample(
            images, n0=1, n=1), "num_classes = 4, but the model returns (3, 5)"),
        (lambda: SmoothedClassifier(tiny_cnn(), num_classes=M, sigma=0.0), "--sigma = 0.0"),
        (lambda: SmoothedClassifier(tiny_cnn(), num_classes=1, sigma=0.25), "num_classes = 1"),
        (lambda: SmoothedClassifier(tiny_cnn(), num_classes=M, sigma=0.25, precision="int8"), "--precision"),
        (lambda: SmoothedClassifier(tiny_cnn(), num_classes=M, sigma=0.25, batch=0), "--batch = 0"),
        (lambda: SmoothedClassifier(lambda x: x, num_classes=M, sigma=0.25), "torch.nn.Module"),
    ]
    for call, words in cases:
        with pytest.raises(CSRSError) as info:
            call()
        assert words in str(info.value), (words, str(info.value))


def test_the_model_keeps_its_weights_and_training_flags(images):
    model = tiny_cnn()
    model.train()
    model[0].eval()  # a mix of flags survives
    before = {k: v.clone() for k, v in model.state_dict().items()}
    SmoothedClassifier(model, num_classes=M, sigma=0.25, device="cpu").sample(images, n0=5, n=20)
    assert model.training and not model[0].training and model[1].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # a failing check restores the flags too
    with pytest.raises(CSRSError):
        SmoothedClassifier(model, num_classes=M + 1, sigma=0.25, device="cpu").sample(images, n0=5, n=20)
    assert model.training and not model[0].training


def test_no_examples_give_empty_counts():
    smooth = SmoothedClassifier(tiny_cnn(), num_classes=M, sigma=0.25, device="cpu")
    c0, c = smooth.sample(torch.zeros((0, 3, 8, 8), dtype=torch.uint8), n0=5, n=5)
    assert c0.shape == c.shape == (0, M)


def test_the_notebook_use_of_design_md_works():
    from csrs_core import CostMatrix as PublicCostMatrix
    from csrs_core import SmoothedClassifier as Public
    from csrs_core import certify_from_counts as public_certify
    assert Public is SmoothedClassifier and PublicCostMatrix is CostMatrix and public_certify is certify_from_counts
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    images = torch.rand(4, 3, 8, 8)
    labels = torch.tensor([3, 1, 4, 1])
    smooth = Public(model, num_classes=10, sigma=0.25)
    counts0, counts = smooth.sample(images, n0=20, n=200, seed=0)
    table = smooth.certify(images, labels, PublicCostMatrix.seedwise(10, seeds=[3]), n0=20, n=200, alpha=0.001,
                           seed=0)
    pred = smooth.predict(images, n=200, alpha=0.001, seed=0)
    assert counts0.shape == counts.shape == (4, 10) and (counts.sum(1) == 200).all()
    assert len(table) == 4 and {"pred", "cost_robust_radius", "r1", "pred_std"} <= set(table.columns)
    assert pred.shape == (4,) and set(pred.tolist()) <= set(range(10)) | {ABSTAIN}


def test_importing_the_package_and_stage_b_does_not_import_torch():
    code = ("import sys; import csrs_core; from csrs_core import CostMatrix, certify_from_counts; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_counts_equal_the_certification_runners_record(tmp_path):
    """The same counts as `csrs certify` stores for a checkpoint and data (uint8 images, their indices)."""
    from csrs_core.data import load_dataset
    from csrs_core.models.architectures import build_model
    from csrs_core.models.checkpoints import load_model, save_checkpoint
    from csrs_core.sampling.stage_a import counts_record
    data = load_dataset("synthetic", "test").subset(np.arange(20, 30))
    torch.manual_seed(0)
    meta = {"arch": "resnet8", "classes": data.classes, "dataset": "synthetic", "sigma": 0.5,
            "method": "gaussian", "mean": [0.5] * 3, "std": [0.25] * 3}
    save_checkpoint(tmp_path / "m.pt", build_model("resnet8", 4, meta["mean"], meta["std"]), meta)
    record = counts_record(tmp_path / "m.pt", data, n0=8, n=40, batch=64, precision="fp32", device="cpu")
    model, _ = load_model(tmp_path / "m.pt")
    smooth = SmoothedClassifier(model, num_classes=4, sigma=0.5, device="cpu", precision="fp32", batch=24)
    counts0, counts = smooth.sample(data.images, n0=8, n=40, seed=0, indices=data.indices)
    assert list(data.indices) == list(range(20, 30)) and (counts.max(1) < 40).sum() >= 3  # noise matters
    np.testing.assert_array_equal(counts0, record.counts0)
    np.testing.assert_array_equal(counts, record.counts)


def test_a_plan_is_made_once_per_shape_and_again_when_the_weights_change(images, monkeypatch):
    from csrs_core.sampling import smoothed as module
    made = []
    real = module.choose_plan
    monkeypatch.setattr(module, "choose_plan", lambda *a, **k: made.append(a[4]) or real(*a, **k))
    model = tiny_cnn()
    smooth = SmoothedClassifier(model, num_classes=M, sigma=0.25, device="cpu", precision="fp32")
    first = smooth.sample(images, n0=5, n=20, seed=1)
    again = smooth.sample(images, n0=5, n=20, seed=1)
    assert len(made) == 1 and all(np.array_equal(a, b) for a, b in zip(first, again))
    with torch.no_grad():
        next(model.parameters()).mul_(-1.0)           # new weights: folded again
    smooth.sample(images, n0=5, n=20, seed=1)
    assert len(made) == 2
    smooth.replan()
    smooth.sample(images, n0=5, n=20, seed=1)
    assert len(made) == 3
