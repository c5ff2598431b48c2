"""Train, select on the validation split, and certify the shipped models of one case.

Usage: python scripts/ship_models.py cifar10|ham10000|imagenette|ham10000-cost10 WORKDIR
       (CSRS_DATA: the folder with the zips)

Every step is a `csrs` command or a stored certification, so rerunning after an interruption skips
what is done. Hyperparameters are chosen on the held-out validation split (never trained on), never
on test. Every MACER and CS-MACER candidate is warm-started from the Cohen model and trained for the
case's warm_epochs, with λ rising linearly over the first lam_warmup epochs (--lam-warmup). The rules
(val certification: n0 = 32, n = 200, α = 0.001, at the case's ε):
  - MACER's λ: the largest val certified accuracy (overall cost) among the candidates whose val
    accuracy is within 3 points of Cohen's and whose balanced accuracy is above 0.55 (not one class);
  - CS-MACER's λ: the largest val Rob_cs (the case's cost matrix) among those within 2 points.
`ham10000-cost10` adds the real-valued case (malignant → benign costs 10, benign → malignant 1, the ICML
2025 paper's 10:1 setting): cost-weighted CS-MACER candidates warm-started from the shipped Cohen model;
λ (0.001, 0.003, 0.01, 0.03, 0.1 or 0.3): the smallest val certified expected cost at ε among the candidates within
2 points of Cohen's val accuracy whose balanced accuracy is above 0.55 (none: nothing is shipped).
The chosen models are copied to checkpoints/<case>-next/ and certified on the shipped test sample
(n0 = 100, n = 1,000, bf16); the validation results are written to WORKDIR/val-results.json."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from csrs_core.cases import write_case_file
from csrs_core.certification.certificates import certified_cost, certify_from_counts
from csrs_core.certification.cost import parse_cost
from csrs_core.certification.metrics import summarize
from csrs_core.data import load_dataset, select_examples
from csrs_core.models.checkpoints import file_digest
from csrs_core.sampling.stage_a import counts_record

REPO = Path(__file__).resolve().parents[1]
WARM = ["--batch", "64", "--lr", "0.01", "--gauss-num", "8"]
CASES = {
    "cifar10": dict(dataset="cifar10-jpeg", arch="resnet20", sigma="0.25", eps=0.25, cost="seedwise:3",
                    cs_name="cs-macer-seed3", extra_costs={"cs-macer-pair3to5": "pairwise:3>5"}, val_per_class=50,
                    cohen=["--epochs", "10", "--batch", "128", "--lr", "0.1"],
                    cohen_r=["--weight", "1.2", "--epochs", "2", "--batch", "128", "--lr", "0.01", "--init"],
                    warm_epochs="2", lam_warmup="1", macer_lams=("1", "3"), cs_lams=("0.5", "1"), nopool=None,
                    question="can a cat be certified as a cat within ε = 0.25, so that no perturbation that small "
                             "makes it any other class? (every mistake on a cat costs; the paper's Single (3))"),
    "ham10000": dict(dataset="ham10000", arch="resnet8-pool4", sigma="0.5", eps=0.5, cost="pairwise:1>0",
                     cs_name="cs-macer", extra_costs={}, val_per_class=None,
                     cohen=["--epochs", "30", "--batch", "128", "--lr", "0.1"],
                     cohen_r=["--weight", "1.2", "--epochs", "30", "--batch", "128", "--lr", "0.1"],
                     warm_epochs="20", lam_warmup="5", macer_lams=("0.1", "0.3", "1"), cs_lams=("0.3", "0.5", "1"),
                     nopool="resnet8",
                     question="can a malignant lesion be pushed to \"benign\" by a perturbation of size ε = 0.5? "
                              "(only malignant → benign costs; benign → malignant is the cheap mistake)"),
    # Imagenette at 64×64 (the paper: 224×224) behind a 2×2 pool, so two CPU cores can train it; the
    # test split is Imagenette's val folder, and the shipped test sample is 50 images per class.
    "imagenette": dict(dataset="imagenette", image_size="64", arch="resnet20-pool2", sigma="0.5", eps=0.5,
                       cost="seedwise:7", cs_name="cs-macer-seed7", extra_costs={}, val_per_class=None,
                       test_per_class=50,
                       cohen=["--epochs", "60", "--batch", "128", "--lr", "0.1"],
                       cohen_r=["--weight", "1.2", "--epochs", "60", "--batch", "128", "--lr", "0.1"],
                       warm_epochs="10", lam_warmup="2", macer_lams=("1", "3"), cs_lams=("0.5", "1"),
                       nopool=None,
                       question="can a gas pump be pushed to any other class by a perturbation of size ε = 0.5? "
                                "(every mistake on a gas pump costs; the paper's Table 1)"),
}


DATA_ROOT = os.environ.get("CSRS_DATA") or "data"  # the folder holding the data sets' zips or folders


def train(work: Path, case: dict, name: str, *args, arch=None) -> Path:
    out = work / name
    subprocess.run([sys.executable, "-m", "csrs_core", "train", "--dataset", case["dataset"], "--arch",
                    arch or case["arch"], "--sigma", case["sigma"], "--precision", "bf16", "--quiet",
                    *(["--image-size", case["image_size"]] if case.get("image_size") else []),
                    "--data-root", DATA_ROOT, "--out", str(out), *args], check=True, cwd=REPO)
    return out.with_name(out.name + ".pt")  # keeps dotted names whole (lam0.5)


def metrics(record, spec: str, eps: float) -> dict:
    cost = parse_cost(spec, len(record.meta["classes"]), record.meta["classes"])
    return summarize(certify_from_counts(record.counts0, record.counts, record.labels, cost,
                                         sigma=record.meta["sigma"], alpha=0.001), eps)


def val_metrics(ckpt: Path, val, case: dict) -> dict:
    record = counts_record(ckpt, val, n0=32, n=200, precision="bf16", batch=128)
    overall, sensitive = metrics(record, "overall", case["eps"]), metrics(record, case["cost"], case["eps"])
    return {"acc": overall["acc"], "balanced_acc": overall["balanced_acc"], "certified": overall["rob_std"],
            "rob_cs": sensitive["rob_cs"]}


def choose(results: dict, candidates, base_acc: float, slack: float, key: str) -> str:
    allowed = [c for c in candidates if results[c]["acc"] >= base_acc - slack and results[c]["balanced_acc"] > 0.55]
    return max(allowed or candidates, key=lambda c: results[c][key])


COST10 = dict(cost="pairwise:1>0=10;0>1", lams=("0.001", "0.003", "0.01", "0.03", "0.1", "0.3"),
              name="cs-macer-cost10")


def val_expected_cost(ckpt: Path, val, case: dict) -> float:
    """The certified expected cost at the case's ε of the 10:1 matrix on val (n0 = 32, n = 200)."""
    record = counts_record(ckpt, val, n0=32, n=200, precision="bf16", batch=128)
    cost = parse_cost(COST10["cost"], 2, record.meta["classes"])
    return float(certified_cost(record.counts0, record.counts, record.labels, cost, record.meta["sigma"],
                                eps=case["eps"]).mean())


def ship(name: str, source: Path, sample, folder: str | None = None) -> None:
    """Copy the chosen model to checkpoints/<folder>/<name>.pt (folder: <case>-next unless given; never a
    stale copy) and certify it on the case's shipped test sample."""
    case = name.split("/")[0]
    dest = REPO / "checkpoints" / (folder or f"{case}-next") / f"{name.split('/')[1]}.pt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or file_digest(dest) != file_digest(source):
        shutil.copy(source, dest)
    counts_record(dest, sample, n0=100, n=1000, precision="bf16", batch=128,
                   command=f"csrs certify --checkpoint checkpoints/{folder or case}/{dest.name} --dataset "
                           f"sample:checkpoints/{case}/test-sample.npz --n0 100 --n 1000 --precision bf16")


def cost10(work: Path):
    """The real-valued HAM10000 case (see the module's docstring)."""
    case = CASES["ham10000"]
    work.mkdir(parents=True, exist_ok=True)
    val = val_split(case)
    cohen = REPO / "checkpoints" / "ham10000" / "cohen.pt"
    results = {"cohen": {**val_metrics(cohen, val, case), "expected_cost": val_expected_cost(cohen, val, case)}}
    warm = [*WARM, "--epochs", case["warm_epochs"], "--lam-warmup", case["lam_warmup"], "--init", str(cohen)]
    for lam in COST10["lams"]:
        ckpt = train(work, case, f"{COST10['name']}-lam{lam}", "--method", "cs-macer", "--cost", COST10["cost"],
                     "--lam", lam, *warm)
        results[ckpt.stem] = {**val_metrics(ckpt, val, case), "expected_cost": val_expected_cost(ckpt, val, case)}
    base = results["cohen"]["acc"]
    names = [f"{COST10['name']}-lam{x}" for x in COST10["lams"]]
    allowed = [c for c in names if results[c]["acc"] >= base - 0.02 and results[c]["balanced_acc"] > 0.55]
    chosen = min(allowed, key=lambda c: results[c]["expected_cost"]) if allowed else None
    (work / "val-results.json").write_text(json.dumps({"val": results, "chosen": chosen}, indent=1))
    print(json.dumps({"val": results, "chosen": chosen}, indent=1), flush=True)
    if chosen is None:
        sys.exit(f"no λ in {COST10['lams']} keeps val accuracy within 2 points of Cohen's ({base:.3f}) with a "
                 "balanced accuracy above 0.55: nothing is shipped; try smaller λ")
    sample = load_dataset(f"sample:{REPO / 'checkpoints' / 'ham10000' / 'test-sample.npz'}")
    ship(f"ham10000/{COST10['name']}", work / f"{chosen}.pt", sample)


def val_split(case: dict):
    """The case's validation examples the rules score on (held out from training, never test)."""
    size = int(case["image_size"]) if case.get("image_size") else None
    val = load_dataset(case["dataset"], "val", root=DATA_ROOT, image_size=size)
    if case["val_per_class"]:
        val = val.subset(select_examples(val.labels.numpy(), per_class=case["val_per_class"], seed=0))
    return val


def case_file(name: str) -> None:
    """checkpoints/<name>/case.json: what the dashboard opens the case on (csrs_core.cases)."""
    case = CASES[name]
    write_case_file(REPO / "checkpoints" / name, question=case["question"], cost=case["cost"], eps=case["eps"],
                    baseline="cohen", focus=case["cs_name"])


def main(name: str, work: Path):
    case = CASES[name]
    work.mkdir(parents=True, exist_ok=True)
    size = int(case["image_size"]) if case.get("image_size") else None
    val = val_split(case)
    results = {}
    cohen = train(work, case, "cohen", "--method", "gaussian", *case["cohen"])
    results["cohen"] = val_metrics(cohen, val, case)
    cohen_r_args = case["cohen_r"] + ([str(cohen)] if case["cohen_r"][-1] == "--init" else [])
    results["cohen-r"] = val_metrics(train(work, case, "cohen-r", "--method", "cohen-r", "--cost", case["cost"],
                                           *cohen_r_args), val, case)
    warm = [*WARM, "--epochs", case["warm_epochs"], "--lam-warmup", case["lam_warmup"], "--init", str(cohen)]
    tag = f"-e{case['warm_epochs']}"  # the warm-started runs' names: method, epochs, λ
    for lam in case["macer_lams"]:
        results[f"macer{tag}-lam{lam}"] = val_metrics(train(work, case, f"macer{tag}-lam{lam}", "--method", "macer",
                                                            "--lam", lam, *warm), val, case)
    cs = case["cs_name"]
    for lam in case["cs_lams"]:
        results[f"{cs}{tag}-lam{lam}"] = val_metrics(train(work, case, f"{cs}{tag}-lam{lam}", "--method",
                                                           "cs-macer", "--cost", case["cost"], "--lam", lam, *warm),
                                                     val, case)
    base = results["cohen"]["acc"]
    chosen = {"cohen": "cohen", "cohen-r": "cohen-r",
              "macer": choose(results, [f"macer{tag}-lam{x}" for x in case["macer_lams"]], base, 0.03, "certified"),
              cs: choose(results, [f"{cs}{tag}-lam{x}" for x in case["cs_lams"]], base, 0.02, "rob_cs")}
    lam = chosen[cs].rsplit("lam", 1)[1]
    for shipped, spec in case["extra_costs"].items():
        source = f"{shipped}{tag}-lam{lam}"
        train(work, case, source, "--method", "cs-macer", "--cost", spec, "--lam", lam, *warm)
        chosen[shipped] = source
    if case["nopool"]:  # the same Cohen training without the average pool, to see what the pool does
        train(work, case, "cohen-nopool", "--method", "gaussian", *case["cohen"], arch=case["nopool"])
        chosen["cohen-nopool"] = "cohen-nopool"
    (work / "val-results.json").write_text(json.dumps({"val": results, "chosen": chosen}, indent=1))
    print(json.dumps({"val": results, "chosen": chosen}, indent=1), flush=True)
    sample_path = REPO / "checkpoints" / name / "test-sample.npz"
    if not sample_path.exists():  # a stratified sample of the test split, shipped so the case works offline
        test = load_dataset(case["dataset"], "test", root=DATA_ROOT, image_size=size)
        sample_path.parent.mkdir(parents=True, exist_ok=True)
        test.subset(select_examples(test.labels.numpy(), per_class=case["test_per_class"], seed=0)).save_sample(sample_path)
    sample = load_dataset(f"sample:{sample_path}")
    for shipped, source in chosen.items():
        ship(f"{name}/{shipped}", work / f"{source}.pt", sample)
    case_file(name)


if __name__ == "__main__":
    (cost10 if sys.argv[1] == "ham10000-cost10" else lambda w: main(sys.argv[1], w))(Path(sys.argv[2]))
