"""A smoothed classifier around any torch module in memory (docs/design.md section 5), with Cohen et al.'s
PREDICT and the paper's cost-sensitive certificates.

    g(x) = argmax_c P[f(x + δ) = c],   δ ~ N(0, σ² I),

where f is the base classifier (a torch module mapping images in [0, 1] to logits) and the noise is
added in [0, 1] pixel space. `SmoothedClassifier` only samples: the counts come from stage A's engine
(`csrs_core.sampling.counts.sample_counts`, the function the certification runner uses), so each example's
noise is drawn from its own stream keyed by (seed, example index), and counts for a given seed do not
depend on the batch size, on which examples are sampled together or on how work is split. The
certificates are stage B's (`csrs_core.certification.certificates.certify_from_counts`)."""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import binom

from csrs_core import CSRSError
from csrs_core.certification.certificates import certify_from_counts
from csrs_core.certification.radii import CLOPPER_PEARSON
from csrs_core.certification.sequences import BETA_BINOMIAL
from csrs_core.certification.sequential import check_eps
from csrs_core.certification.cost import CostMatrix, parse_cost
from csrs_core.settings import CERTIFY, SettingError, check_settings
from csrs_core.runtime.device import pick_device
from csrs_core.sampling.counts import SAMPLING_SCHEME, check_logits, sample_counts
from csrs_core.sampling.plan import MEASURE_WORTH_SAMPLES, choose_plan
from csrs_core.sampling.sequential import FIRST_ROUND, StoppingRule, sample_sequential

ABSTAIN = -1
_PIXEL_BYTES_PER_CALL = 1 << 28  # images handed to the sampler at once (bounds device memory for images)


class SmoothedClassifier:
    """The smoothed classifier g of a base classifier `model` at noise level `sigma`.

    model:       any torch.nn.Module that maps a batch of images [B, C, H, W] with values in [0, 1] to
                 logits [B, num_classes] (normalisation belongs inside the model, as in Cohen et al.).
    num_classes: the width of the model's output; checked on the first forward pass.
    sigma:       the noise level σ (> 0), in [0, 1] pixel units.
    device:      where the model runs: 'auto' (the GPU when one is present, else the CPU), 'cpu',
                 'cuda' or 'cuda:N'. The model is moved there in place, as `model.to(device)` does.
    precision:   the base classifier's arithmetic: 'auto' (as the CLI: fp32 for small jobs on a machine
                 and model not measured yet, else the fastest measured precision and batch; the
                 measurement is cached in CSRS's cache folder), 'fp32', 'bf16' or 'fp16'. The precision is
                 part of what the base classifier is; after each call `last_plan` says which one ran.
    batch:       noisy images per forward pass ('auto' or None: chosen with the precision). It never
                 changes the counts, only the speed and the memory used.

    The plan (precision, batch, the BatchNorm-folded copy that runs) is made once per input shape and
    reused while the model's weights are unchanged (an in-place update or a replaced tensor makes a
    new one); `replan()` forgets it.

    While sampling the model is in eval mode under torch.inference_mode; afterwards every submodule's
    training flag is restored. Its weights are never changed; the sampler may store conv weights
    channels-last (same values). Calls with the same seed and example indices on the same machine,
    device type and precision return the same counts (bf16/fp16 kernels, and so the counts, can differ
    between CPU or GPU models); with precision 'auto' the precision may differ between a small and a
    large call, so pass one explicitly where counts must be reproduced."""

    ABSTAIN = ABSTAIN

    def __init__(self, model: torch.nn.Module, num_classes: int, sigma: float, *, device: str = "auto",
                 precision: str = "auto", batch: int | str | None = None):
        if not isinstance(model, torch.nn.Module):
            raise SettingError(f"model must be a torch.nn.Module (images in [0, 1] -> logits); got "
                               f"{type(model).__name__}")
        s = check_settings(CERTIFY, {"sigma": sigma, "precision": precision,
                                     "batch": None if batch == "auto" else batch})
        if s["sigma"] is None:
            raise SettingError(f"{CERTIFY['sigma'].flag} is required: the noise level σ of the smoothed classifier")
        self.model = model
        self.num_classes = _num_classes(num_classes)
        self.sigma = s["sigma"]
        self.precision = s["precision"]
        self.batch = s["batch"]
        self.device = pick_device(device)
        self.model.to(self.device)
        self.last_plan: dict | None = None
        self._plans: dict = {}   # (input shape, large job) -> (weights' identity, plan, module it runs)

    def __repr__(self):
        return (f"SmoothedClassifier({type(self.model).__name__}, num_classes={self.num_classes}, "
                f"sigma={self.sigma}, device={str(self.device)!r}, precision={self.precision!r})")

    # ------------------------------------------------------------------------------------ sampling
    def sample(self, images, n0: int = CERTIFY["n0"].default, n: int = CERTIFY["n"].default, seed: int = 0,
               indices=None) -> tuple[np.ndarray, np.ndarray]:
        """Counts of the base classifier's predictions under noise, per example: `counts0` [N, m] from
        n0 noisy copies (the selection sample) and `counts` [N, m] from n fresh copies (the estimation
        sample), as int64 arrays. Stage A exactly: pass a data set's uint8 images, its `indices`, and the
        seed, device type and precision of a certification record to get that record's counts.

        images:  [N, C, H, W], uint8 (0..255, divided by 255) or floating point with values in [0, 1].
        indices: the example ids that key each example's noise stream (default 0..N-1)."""
        s = check_settings(CERTIFY, {"n0": n0, "n": n, "seed": seed})
        pixels = _as_pixels(images)
        ids = _indices(indices, len(pixels))
        return self._counts(pixels, ids, s["n0"], s["n"], s["seed"])

    def certify(self, images, labels, cost, n0: int = CERTIFY["n0"].default, n: int = CERTIFY["n"].default,
                alpha: float = CERTIFY["alpha"].default, seed: int = 0, mode: str = CERTIFY["mode"].default,
                indices=None, sequential: bool = False, eps=None):
        """Cost-sensitive certificates (the paper's Algorithm 1) for every example: `sample` then
        `certify_from_counts` (a pandas DataFrame, one row per example; docs/design.md section 5).

        With probability at least 1 − α over the sampling (mode 'sound'; 1 − 1.5α in 'paper' mode), for
        every example no ℓ2 perturbation of norm below `cost_robust_radius` makes g predict a class k
        with cost[label, k] > 0 (an example whose predicted class already costs has radius −inf); and,
        separately with probability at least 1 − α, `pred_std` (when not −1) is g's prediction within
        radius `r1` (Cohen et al.'s CERTIFY). `cost` is a CostMatrix, anything CostMatrix accepts (an
        m × m 0/1 array), or a preset string such as 'seedwise:3' (the CLI's --cost).

        sequential=True with radii `eps` (docs/sequential.md): each example draws estimation copies
        until every radius is decided for this cost matrix (certified, or out of reach within n copies,
        which is then the cap), and the certificates read confidence sequences, valid at that stop; the
        table's `n_used` says how many copies each example used. Sound mode only."""
        s = check_settings(CERTIFY, {"n0": n0, "n": n, "seed": seed, "alpha": alpha, "mode": mode,
                                     "sequential": bool(sequential), **({"eps": eps} if sequential else {})})
        if sequential and s["mode"] == "paper":
            raise SettingError("sequential=True reads confidence sequences in sound mode only; mode 'paper' does "
                               "not apply")
        pixels = _as_pixels(images)
        ids = _indices(indices, len(pixels))
        labels = _labels(labels, len(pixels), self.num_classes)
        cost = _cost(cost, self.num_classes)
        rule = StoppingRule(check_eps(s["eps"], self.sigma, s["n"], s["alpha"]), s["alpha"], cost, s["n"],
                            self.sigma) if sequential else None
        counts0, counts = self._counts(pixels, ids, s["n0"], s["n"], s["seed"], rule, labels)
        bounds = BETA_BINOMIAL if sequential else CLOPPER_PEARSON
        table = certify_from_counts(counts0, counts, labels, cost, self.sigma, s["alpha"], s["mode"], bounds)
        if sequential:
            table["n_used"] = counts.sum(axis=1)
        table.attrs.update(sigma=self.sigma, alpha=s["alpha"], mode=s["mode"], n0=s["n0"], n=s["n"],
                           seed=s["seed"], cost=cost.to_json(), bounds=bounds.name,
                           **({"eps": list(s["eps"])} if sequential else {}), **(self.last_plan or {}))
        return table

    def predict(self, images, n: int = 1000, alpha: float = CERTIFY["alpha"].default, seed: int = 0,
                indices=None) -> np.ndarray:
        """Cohen et al.'s PREDICT for every example: draw n noisy copies, take the two most frequent
        classes (counts nA ≥ nB) and return the top one when the two-sided binomial test of
        nA against Binomial(nA + nB, 1/2) has p-value ≤ α, else ABSTAIN (−1). int64 array [N].

        For each example, with probability at least 1 − α over the sampling, the answer is either
        ABSTAIN or g(x). The n copies are the first n of the example's stream for this seed, the same
        draws `sample(seed=seed, n0=n)` uses for its selection sample."""
        s = check_settings(CERTIFY, {"n": n, "seed": seed, "alpha": alpha})
        pixels = _as_pixels(images)
        ids = _indices(indices, len(pixels))
        _, counts = self._counts(pixels, ids, 0, s["n"], s["seed"])
        return predict_from_counts(counts, s["alpha"])

    # ---------------------------------------------------------------------------------- internals
    def _counts(self, pixels: torch.Tensor, ids: np.ndarray, n0: int, n: int, seed: int,
                rule: StoppingRule | None = None, labels=None):
        N, m = len(pixels), self.num_classes
        if N == 0:
            return np.zeros((0, m), np.int64), np.zeros((0, m), np.int64)
        flags = [(module, module.training) for module in self.model.modules()]
        try:
            expected_n = n if rule is None else max(FIRST_ROUND, n // 20)
            plan, runnable = self._plan(pixels, N * (n0 + expected_n))
            self.last_plan = {"device": str(self.device), "precision": plan.precision, "batch": plan.batch,
                              "compiled": plan.compiled, "batchnorm_folded": plan.folded,
                              "sampling_scheme": SAMPLING_SCHEME}
            per_image = pixels[0].numel() * pixels.element_size()
            chunk = max(1, _PIXEL_BYTES_PER_CALL // per_image)
            counts0, counts = np.zeros((N, m), np.int64), np.zeros((N, m), np.int64)
            for start in range(0, N, chunk):
                part = slice(start, min(start + chunk, N))
                if rule is None:
                    counts0[part], counts[part] = sample_counts(
                        runnable, pixels[part], ids[part], m, self.sigma, n0, n, plan.batch, seed, self.device,
                        plan.precision)
                else:
                    counts0[part], counts[part] = sample_sequential(
                        runnable, pixels[part], ids[part], labels[part], m, self.sigma, n0, rule, plan.batch, seed,
                        self.device, plan.precision)
        finally:
            for module, training in flags:
                module.training = training
        return counts0, counts

    def _plan(self, pixels: torch.Tensor, samples: int):
        """(plan, the module it runs) for images shaped like `pixels`: made once per input shape, weights
        and size class of job (small jobs never measure), then reused; the first pass's logits are checked
        when a plan is made."""
        weights = tuple((id(t), t._version) for t in (*self.model.parameters(), *self.model.buffers()))
        key = (tuple(pixels.shape[1:]), samples >= MEASURE_WORTH_SAMPLES)
        cached = self._plans.get(key)
        if cached is not None and cached[0] == weights:
            return cached[1], cached[2]
        plan = choose_plan(self.model, self.device, self.precision, self.batch, key[0], samples=samples)
        m = self.num_classes
        check_logits(self.model, pixels[0], m, self.sigma, self.device, plan.precision,
                     f"num_classes = {m}, but the model", "; pass the width of its output as num_classes")
        runnable = plan.runnable(self.device)
        self._plans[key] = (weights, plan, runnable)
        return plan, runnable

    def replan(self) -> None:
        """Forget the plans made so far: the next call chooses precision and batch (and measures) again."""
        self._plans.clear()


def predict_from_counts(counts, alpha: float) -> np.ndarray:
    """Cohen et al.'s PREDICT from counts [N, m] of n noisy copies each: the top class where the
    two-sided binomial test of nA against Binomial(nA + nB, 1/2) rejects at level α, else ABSTAIN.
    (The same p-value as scipy.stats.binomtest(nA, nA + nB, 0.5), vectorised: 2·P[X ≥ nA], at most 1.)"""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[1] < 2:
        raise CSRSError(f"counts must be [N, m] with m ≥ 2 classes; got shape {counts.shape}")
    rows = np.arange(len(counts))
    top = counts.argmax(axis=1)                       # ties: lowest index
    n_a = counts[rows, top]
    rest = counts.copy()
    rest[rows, top] = -1
    n_b = rest.max(axis=1)
    p_value = np.minimum(1.0, 2.0 * binom.sf(n_a - 1, n_a + n_b, 0.5))
    return np.where(p_value <= alpha, top, ABSTAIN).astype(np.int64)


# ---------------------------------------------------------------------------------------- checks
def _num_classes(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
        raise SettingError(f"num_classes = {value!r} is not allowed: must be a whole number ≥ 2 (the width "
                           "of the model's output)")
    return int(value)


def _as_pixels(images) -> torch.Tensor:
    """images as the sampler takes them: uint8 0..255, or float32 in [0, 1]."""
    if isinstance(images, torch.Tensor):
        t = images.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(images))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise SettingError(f"images must be a tensor or array [N, C, H, W]; got {type(images).__name__}: "
                               f"{exc}") from None
    if t.ndim != 4:
        hint = " (one image: pass images[None])" if t.ndim == 3 else ""
        raise SettingError(f"images must be a batch [N, C, H, W]; got shape {tuple(t.shape)}{hint}")
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point():
        raise SettingError(f"images must be uint8 (0..255) or floating point in [0, 1]; got dtype {t.dtype}")
    if t.numel():
        finite = bool(torch.isfinite(t).all())
        lo, hi = float(t.min()), float(t.max())
        if not finite or lo < 0 or hi > 1:
            found = "non-finite values" if not finite else f"values in [{lo:g}, {hi:g}]"
            raise SettingError(f"images must hold pixel values in [0, 1] (floating point) or 0..255 (uint8); "
                               f"got {found}. Noise is added in [0, 1] pixel space: pass images before any "
                               "normalisation (divide 0..255 floats by 255)")
    return t.to(torch.float32)


def _indices(indices, N: int) -> np.ndarray:
    if indices is None:
        return np.arange(N, dtype=np.int64)
    arr = indices.detach().cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
    if arr.shape != (N,) or (N and arr.dtype.kind not in "iu"):
        raise SettingError(f"indices must be N = {N} whole numbers (the example ids that seed each example's "
                           f"noise); got shape {arr.shape}, dtype {arr.dtype}")
    return arr.astype(np.int64)


def _labels(labels, N: int, m: int) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.shape != (N,) or (N and arr.dtype.kind not in "iu"):
        raise SettingError(f"labels must be N = {N} class indices; got shape {arr.shape}, dtype {arr.dtype}")
    if N and (arr.min() < 0 or arr.max() >= m):
        raise SettingError(f"labels range over {arr.min()}..{arr.max()} but num_classes = {m}")
    return arr.astype(np.int64)


def _cost(cost, m: int) -> CostMatrix:
    if isinstance(cost, str):
        return parse_cost(cost, m)
    if not isinstance(cost, CostMatrix):
        cost = CostMatrix(cost)
    if cost.m != m:
        raise SettingError(f"the cost matrix has {cost.m} classes but num_classes = {m}")
    return cost
