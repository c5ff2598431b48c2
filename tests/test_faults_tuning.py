"""The compiled candidate is timed like every other: under the machine-wide measuring lock, and cached
only when no other process loaded the CPU and its rounds agree."""
import subprocess
import sys
import time

import pytest
import torch

from csrs_core.runtime.locks import OutputBusyError, output_lock
from csrs_core.sampling import plan as autotune

CPU = torch.device("cpu")
SHAPE = (3, 2, 2)


class Compiled(torch.nn.Module):
    """Stands for torch.compile's module (compiling itself is not what these tests are about)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def _tiny():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))


@pytest.fixture
def eager_cached(tmp_path, monkeypatch):
    """A fresh tuning cache holding a quiet, steady eager measurement of _tiny(): the next long job
    measures only the compiled candidate."""
    monkeypatch.setenv("CSRS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "compile_model", lambda model, device: Compiled(model))
    *_, key = autotune._search(_tiny(), CPU, "auto", None, SHAPE)
    autotune._store(key, {"eager/fp32/64": 100.0})
    return key


def _compiled_keys(key) -> list[str]:
    return [k for k in autotune._load_table().get(key, {}) if k.startswith("compiled/")]


def test_the_compiled_candidate_is_measured_under_the_machine_wide_lock(eager_cached, monkeypatch):
    held = []

    def compile_noting_the_lock(model, device):
        try:
            with output_lock(autotune.cache_dir() / "autotune-measure", timeout=0):
                held.append(False)
        except OutputBusyError:
            held.append(True)
        return Compiled(model)
    monkeypatch.setattr(autotune, "compile_model", compile_noting_the_lock)
    monkeypatch.setattr(autotune, "others_busy", lambda device: False)
    autotune.choose_plan(_tiny(), CPU, "auto", None, SHAPE, samples=10**9)
    assert held == [True]


def test_a_compiled_timing_under_two_cpu_hogs_serves_the_job_but_is_not_cached(eager_cached):
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        plan = autotune.choose_plan(_tiny(), CPU, "auto", None, SHAPE, samples=10**9)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert plan.cache_key is None and plan.rates and any(k.startswith("compiled/") for k in plan.rates)
    assert _compiled_keys(eager_cached) == []
    assert autotune._load_table()[eager_cached] == {"eager/fp32/64": 100.0}  # the quiet eager entry stays


@pytest.mark.parametrize("compiled_rounds, cached", [((600.0, 1000.0, 1000.0), False), ((990.0, 1000.0, 980.0), True)])
def test_a_compiled_timing_is_cached_only_when_its_rounds_agree(eager_cached, monkeypatch, compiled_rounds, cached):
    rounds = iter(compiled_rounds)
    monkeypatch.setattr(autotune, "forward_rate",
                        lambda model, *a, **k: next(rounds) if isinstance(model, Compiled) else 90.0)
    monkeypatch.setattr(autotune, "others_busy", lambda device: False)
    plan = autotune.choose_plan(_tiny(), CPU, "auto", None, SHAPE, samples=10**9)
    assert plan.compiled and plan.expected == 1000.0
    assert (_compiled_keys(eager_cached) == ["compiled/fp32/64"]) is cached
    assert (plan.cache_key == eager_cached) is cached
