"""Re-run a case's shipped recipes at another seed and certify the results as the shipped models are.

Usage: python scripts/ship_seeds.py CASE SEED WORKDIR [NAME ...]   (CSRS_DATA: the folder with the zips)

Each shipped model of checkpoints/CASE/ (or only the NAMEs given, in that order) is trained again with
exactly the hyperparameters its metadata records, `--seed SEED` instead of its own; a warm start is
this seed's own Cohen model (trained first), so every seed is an independent run of the whole recipe
(initial weights, data order, augmentation and noise); cohen-shift is this seed's Cohen model with the
shipped shift. λ, w, the shift and the other choices made on val for the shipped models are kept, not
searched again. The models are copied to checkpoints/CASE-seeds/seedSEED/ and certified on the case's
shipped test sample with the shipped records' settings (n0 = 100, n = 1,000, bf16). Resumable: rerun
after an interruption and finished steps are skipped (on another machine too: a model already in
checkpoints/CASE-seeds/ is resumed from, not trained again). `csrs report --seeds` compares the methods
over the seeds."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from csrs_core.cases import CASE_FILE
from csrs_core.cli.options import to_argv
from csrs_core.data import load_dataset
from csrs_core.models.checkpoints import file_digest, list_checkpoints, read_meta, save_shifted
from csrs_core.sampling.stage_a import counts_record
from csrs_core.settings import TRAIN
from csrs_core.training.loop import TrainConfig

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = os.environ.get("CSRS_DATA") or "data"


def recipe(meta: dict, seed: int, init: Path | None, out: Path) -> list[str]:
    """`csrs train` arguments that repeat the run recorded in `meta` at `seed`, warm-started from `init`."""
    hp = {k: v for k, v in meta["hyperparameters"].items() if k in TRAIN and k not in TrainConfig.RUNTIME_ONLY}
    hp.update(seed=seed, init=str(init) if init else None, out=str(out), data_root=DATA_ROOT)
    return to_argv(TRAIN, hp)


def main(case: str, seed: int, work: Path, names: list[str]) -> None:
    shipped = {p.stem: p for p in list_checkpoints(REPO / "checkpoints" / case) if p.parent.name == case}
    names = names or sorted(shipped, key=lambda n: (n != "cohen", n))
    dest = REPO / "checkpoints" / f"{case}-seeds" / f"seed{seed}"
    sample = load_dataset(f"sample:{REPO / 'checkpoints' / case / 'test-sample.npz'}")
    work.mkdir(parents=True, exist_ok=True)
    if (REPO / "checkpoints" / case / CASE_FILE).is_file():  # each seed's folder opens on the case's question
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "checkpoints" / case / CASE_FILE, dest / CASE_FILE)
    for name in ["cohen"] + [n for n in names if n != "cohen"]:
        meta = read_meta(shipped[name])
        init = work / "cohen.pt" if meta.get("init") else None
        out = work / name
        target = dest / f"{name}.pt"
        if target.exists() and not out.with_name(name + ".pt").exists():  # shipped before: resume from it
            shutil.copy(target, out.with_name(name + ".pt"))
        if meta.get("logit_shift"):  # cohen-shift: this seed's Cohen model with the shipped shift
            if not out.with_name(name + ".pt").exists():
                save_shifted(work / "cohen.pt", out.with_name(name + ".pt"), meta["logit_shift"], meta["method"])
        else:
            subprocess.run([sys.executable, "-m", "csrs_core", "train", *recipe(meta, seed, init, out), "--quiet",
                            "--threads", "1"], check=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or file_digest(target) != file_digest(out.with_name(name + ".pt")):
            shutil.copy(out.with_name(name + ".pt"), target)
        counts_record(target, sample, n0=100, n=1000, precision="bf16", batch=128,
                      command=f"csrs certify --checkpoint checkpoints/{case}-seeds/seed{seed}/{name}.pt --dataset "
                              f"sample:checkpoints/{case}/test-sample.npz --n0 100 --n 1000 --precision bf16")
        print(f"{case} seed {seed}: {name} certified", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
