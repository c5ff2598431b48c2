"""The baselines and controls a reviewer asks for, made from a case's shipped Cohen model and chosen
on the validation split by the same rules as the shipped models' λ (scripts/ship_models.py).

Usage: python scripts/ship_baselines.py CASE WORKDIR [STEP ...]   (CSRS_DATA: the folder with the zips)
STEPs (default: shift, extra, weight, in this order):
  shift   cohen-shift: the shipped Cohen model with a bias b added to the logits of the case's sensitive
          classes (the costly decisions' true classes), b in SHIFTS; b: the largest val Rob_cs among the
          candidates within 2 points of Cohen's val accuracy with a balanced accuracy above 0.55
          (b = 0, Cohen itself, is a candidate). Shipped as checkpoints/CASE/cohen-shift.pt.
  extra   equal budgets: Cohen and Cohen-R warm-started from the shipped Cohen model with MACER's and
          CS-MACER's extra epochs, batch, learning rate and 8 noisy copies (the loss averaged over them),
          shipped as cohen-extra.pt and cohen-r-extra.pt.
  weight  Cohen-R's weight w on val: the shipped recipe at each w in WEIGHTS (1.2: the shipped model), scored by
          the rule above; written to WORKDIR/val-weights.json (shipping a new w is a separate choice).
  sensitive  every test image of the case's sensitive classes (checkpoints/CASE/test-sensitive.npz),
          certified by every shipped model: `csrs report --examples` on it gives Rob_cs on all of them.
  cost10-grid  (ham10000) the 10:1 model's λ grid widened below the shipped λ (cost10_grid).
  rewarm  the shipped MACER and CS-MACER models trained again with exactly the recipe their metadata records
          (seed, λ, epochs), warm-started from checkpoints/CASE/cohen.pt, so that their metadata records the
          warm start's sha256; they replace the shipped ones (their old records removed) and are certified
          on the test sample (and on test-sensitive.npz when the case has it).
Val certification: n0 = 32, n = 200, α = 0.001, bf16, at the case's ε. Shipped models are certified on
the case's test sample as the others (n0 = 100, n = 1,000, bf16). Resumable."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from csrs_core.certification.cost import parse_cost
from csrs_core.models.checkpoints import read_meta, save_shifted
from csrs_core.sampling.stage_a import counts_record

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ship_seeds import recipe  # noqa: E402
from ship_models import (CASES, COST10, DATA_ROOT, REPO, WARM, choose, ship, train, val_expected_cost,  # noqa: E402
                         val_metrics, val_split)

from csrs_core.data import load_dataset  # noqa: E402
from csrs_core.models.checkpoints import file_digest  # noqa: E402

SHIFTS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
WEIGHTS = ("1.2", "2", "4")


def save_results(work: Path, name: str, results: dict) -> None:
    (work / name).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1), flush=True)


def shift(name: str, work: Path, val, sample) -> None:
    case = CASES[name]
    cohen = REPO / "checkpoints" / name / "cohen.pt"
    classes = read_meta(cohen)["classes"]
    sensitive = np.flatnonzero(parse_cost(case["cost"], len(classes), classes).matrix.any(1))
    results = {"cohen": val_metrics(cohen, val, case)}
    for b in SHIFTS:
        candidate = work / f"cohen-shift{b}.pt"
        if not candidate.exists():
            save_shifted(cohen, candidate, [b if k in sensitive else 0.0 for k in range(len(classes))])
        results[candidate.stem] = val_metrics(candidate, val, case)
    chosen = choose(results, list(results), results["cohen"]["acc"], 0.02, "rob_cs")
    save_results(work, "val-shift.json", {"val": results, "chosen": chosen, "sensitive": sensitive.tolist()})
    ship(f"{name}/cohen-shift", work / f"{chosen}.pt", sample, folder=name)


def extra(name: str, work: Path, val, sample) -> None:
    case = CASES[name]
    cohen = Path("checkpoints") / name / "cohen.pt"  # train() runs in the repository
    warm = [*WARM, "--epochs", case["warm_epochs"], "--init", str(cohen)]
    ship(f"{name}/cohen-extra", train(work, case, "cohen-extra", "--method", "gaussian", *warm), sample, name)
    ship(f"{name}/cohen-r-extra", train(work, case, "cohen-r-extra", "--method", "cohen-r", "--cost", case["cost"],
                                        *warm), sample, name)


def weight(name: str, work: Path, val, sample) -> None:
    case = CASES[name]
    cohen = REPO / "checkpoints" / name / "cohen.pt"
    shipped_w = case["cohen_r"][1]
    results = {"cohen": val_metrics(cohen, val, case),
               f"cohen-r-w{shipped_w}": val_metrics(REPO / "checkpoints" / name / "cohen-r.pt", val, case)}
    args = case["cohen_r"][2:] + ([str(cohen)] if case["cohen_r"][-1] == "--init" else [])  # after "--weight w"
    for w in WEIGHTS:
        if w != shipped_w:
            ckpt = train(work, case, f"cohen-r-w{w}", "--method", "cohen-r", "--cost", case["cost"], "--weight", w,
                         *args)
            results[ckpt.stem] = val_metrics(ckpt, val, case)
    chosen = choose(results, [f"cohen-r-w{w}" for w in WEIGHTS], results["cohen"]["acc"], 0.02, "rob_cs")
    save_results(work, "val-weights.json", {"val": results, "chosen": chosen})


def sensitive(name: str, work: Path, val, sample) -> None:
    """Every test image of the case's sensitive classes, saved as checkpoints/CASE/test-sensitive.npz and
    certified by every shipped model as the test sample is (its Rob_cs then rests on all of them)."""
    case = CASES[name]
    path = REPO / "checkpoints" / name / "test-sensitive.npz"
    if not path.exists():
        size = int(case["image_size"]) if case.get("image_size") else None
        test = load_dataset(case["dataset"], "test", root=DATA_ROOT, image_size=size)
        costly = parse_cost(case["cost"], test.num_classes, test.classes).matrix.any(1)
        test.subset(np.flatnonzero(costly[test.labels.numpy()])).save_sample(path)
    images = load_dataset(f"sample:{path}")
    for ckpt in sorted((REPO / "checkpoints" / name).glob("*.pt")):
        counts_record(ckpt, images, n0=100, n=1000, precision="bf16", batch=128,
                      command=f"csrs certify --checkpoint checkpoints/{name}/{ckpt.name} --dataset "
                              f"sample:checkpoints/{name}/test-sensitive.npz --n0 100 --n 1000 --precision bf16")
        print(f"{name}/{ckpt.stem}: certified on {len(images)} sensitive test images", flush=True)


def cost10_grid(name: str, work: Path, val, sample) -> None:
    """HAM10000's 10:1 model with the λ grid widened below its chosen edge: the λ of COST10 smaller than the
    shipped model's are trained as ship_models.py's cost10 trains them; the rule of that step then chooses
    among them and the shipped model (the larger λ were already outside the accuracy band); a new choice
    replaces checkpoints/ham10000/cs-macer-cost10.pt."""
    case, shipped = CASES[name], REPO / "checkpoints" / name / f"{COST10['name']}.pt"
    chosen_lam = f"{read_meta(shipped)['hyperparameters']['lam']:g}"
    cohen = REPO / "checkpoints" / name / "cohen.pt"
    results = {"cohen": {**val_metrics(cohen, val, case), "expected_cost": val_expected_cost(cohen, val, case)},
               f"shipped-lam{chosen_lam}": {**val_metrics(shipped, val, case),
                                            "expected_cost": val_expected_cost(shipped, val, case)}}
    warm = [*WARM, "--epochs", case["warm_epochs"], "--lam-warmup", case["lam_warmup"], "--init", str(cohen)]
    for lam in (x for x in COST10["lams"] if float(x) < float(chosen_lam)):
        ckpt = train(work, case, f"{COST10['name']}-lam{lam}", "--method", "cs-macer", "--cost", COST10["cost"],
                     "--lam", lam, *warm)
        results[ckpt.stem] = {**val_metrics(ckpt, val, case), "expected_cost": val_expected_cost(ckpt, val, case)}
    base = results["cohen"]["acc"]
    allowed = [c for c in results if c != "cohen" and results[c]["acc"] >= base - 0.02
               and results[c]["balanced_acc"] > 0.55]
    chosen = min(allowed, key=lambda c: results[c]["expected_cost"]) if allowed else None
    save_results(work, "val-cost10-grid.json", {"val": results, "chosen": chosen})
    if chosen and not chosen.startswith("shipped"):
        ship(f"{name}/{COST10['name']}", work / f"{chosen}.pt", sample, name)


def rewarm(name: str, work: Path, val, sample) -> None:
    folder = REPO / "checkpoints" / name
    cohen = Path("checkpoints") / name / "cohen.pt"  # relative to the repository: the metadata names no machine's folder
    for ckpt in sorted(folder.glob("*.pt")):
        meta = read_meta(ckpt)
        if meta["method"] not in ("macer", "cs-macer") or meta["init"].get("sha256") == file_digest(REPO / cohen):
            continue
        out = work / ckpt.stem
        subprocess.run([sys.executable, "-m", "csrs_core", "train", *recipe(meta, meta["hyperparameters"]["seed"],
                        cohen, out), "--quiet", "--threads", "1"], check=True, cwd=REPO)
        for old in ckpt.with_suffix(".certs").glob("*.npz"):  # records of the model being replaced
            old.unlink()
        ship(f"{name}/{ckpt.stem}", out.with_name(out.name + ".pt"), sample, name)
    if (folder / "test-sensitive.npz").exists():
        sensitive(name, work, val, sample)


STEPS = {"shift": shift, "extra": extra, "weight": weight, "sensitive": sensitive, "cost10-grid": cost10_grid,
         "rewarm": rewarm}


def main(name: str, work: Path, steps: list[str]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    val = val_split(CASES[name])
    sample = load_dataset(f"sample:{REPO / 'checkpoints' / name / 'test-sample.npz'}")
    for step in steps or ["shift", "extra", "weight"]:
        STEPS[step](name, work, val, sample)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
