"""Train, select on the validation split, and certify the shipped CIFAR-10 models (ResNet-20, σ = 0.25).

Every step is a `csrs` command (resumable: rerun this script after an interruption and finished
steps are skipped, cached certifications reused). Hyperparameters are chosen on the held-out
validation split (5,000 training images never trained on), never on test:
  - MACER's λ: the largest val certified accuracy at ε = 0.25 (overall cost) among the candidates
    whose val accuracy is within 3 points of Cohen's;
  - CS-MACER's λ: the largest val Rob_cs (seedwise cat, ε = 0.25) among those within 2 points.
Val certification: 50 images per class, n0 = 32, n = 200 (cheap, only to rank candidates).
The chosen models are copied to checkpoints/cifar10/ and certified on the shipped test sample
(1,000 stratified test images, n0 = 100, n = 1,000). Usage: python scripts/ship_cifar10.py WORKDIR"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from csrs_core.certify import certify_from_counts
from csrs_core.cost import parse_cost
from csrs_core.data import load_dataset, select_examples
from csrs_core.metrics import summarize
from csrs_core.runner import certify_counts

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--dataset", "cifar10-jpeg", "--arch", "resnet20", "--sigma", "0.25", "--precision", "bf16",
          "--quiet", "--data-root", str(REPO.parent / "shared" / "data")]
WARM = ["--epochs", "1", "--batch", "64", "--lr", "0.01", "--gauss-num", "8"]
SEEDWISE, PAIRWISE = "seedwise:3", "pairwise:3>5"


def train(work: Path, name: str, *args) -> Path:
    out = work / name
    subprocess.run([sys.executable, "-m", "csrs_core", "train", *COMMON, "--out", str(out), *args], check=True)
    return out.with_suffix(".pt")


def val_metrics(ckpt: Path, val) -> dict:
    record = certify_counts(ckpt, val, n0=32, n=200, precision="bf16", batch=128)
    out = {}
    for name, spec in (("overall", "overall"), ("cat", SEEDWISE), ("cat_dog", PAIRWISE)):
        cost = parse_cost(spec, 10, record.meta["classes"])
        s = summarize(certify_from_counts(record.counts0, record.counts, record.labels, cost, sigma=0.25,
                                          alpha=0.001), 0.25)
        out["acc"] = s["acc"]
        out[f"rob_cs_{name}"] = s["rob_cs"]
    return out


def choose(results: dict, candidates: list[str], base_acc: float, slack: float, key: str) -> str:
    allowed = [c for c in candidates if results[c]["acc"] >= base_acc - slack] or candidates
    return max(allowed, key=lambda c: results[c][key])


def main(work: Path):
    work.mkdir(parents=True, exist_ok=True)
    val = load_dataset("cifar10-jpeg", "val", root=REPO.parent / "shared" / "data")
    val = val.subset(select_examples(val.labels.numpy(), per_class=50, seed=0))
    results = {}
    cohen = train(work, "cohen", "--method", "gaussian", "--epochs", "10", "--batch", "128", "--lr", "0.1")
    results["cohen"] = val_metrics(cohen, val)
    cohen_r = train(work, "cohen-r", "--method", "cohen-r", "--weight", "1.2", "--cost", SEEDWISE,
                    "--epochs", "2", "--batch", "128", "--lr", "0.01", "--init", str(cohen))
    results["cohen-r"] = val_metrics(cohen_r, val)
    for lam in ("1", "3"):
        ckpt = train(work, f"macer-lam{lam}", "--method", "macer", "--lam", lam, *WARM, "--init", str(cohen))
        results[f"macer-lam{lam}"] = val_metrics(ckpt, val)
    for lam in ("0.5", "1"):
        ckpt = train(work, f"cs-macer-seed3-lam{lam}", "--method", "cs-macer", "--cost", SEEDWISE, "--lam", lam,
                     *WARM, "--init", str(cohen))
        results[f"cs-macer-seed3-lam{lam}"] = val_metrics(ckpt, val)
    base = results["cohen"]["acc"]
    macer = choose(results, ["macer-lam1", "macer-lam3"], base, 0.03, "rob_cs_overall")
    cs_seed = choose(results, [c for c in results if c.startswith("cs-macer-seed3")], base, 0.02, "rob_cs_cat")
    lam = cs_seed.rsplit("lam", 1)[1]
    cs_pair = f"cs-macer-pair3to5-lam{lam}"
    ckpt = train(work, cs_pair, "--method", "cs-macer", "--cost", PAIRWISE, "--lam", lam, *WARM, "--init", str(cohen))
    results[cs_pair] = val_metrics(ckpt, val)
    chosen = {"cohen": "cohen", "cohen-r": "cohen-r", "macer": macer, "cs-macer-seed3": cs_seed,
              "cs-macer-pair3to5": cs_pair}
    (work / "val-results.json").write_text(json.dumps({"val": results, "chosen": chosen}, indent=1))
    print(json.dumps({"val": results, "chosen": chosen}, indent=1))
    target = REPO / "checkpoints" / "cifar10-next"
    target.mkdir(parents=True, exist_ok=True)
    sample = load_dataset(f"sample:{REPO / 'checkpoints' / 'cifar10' / 'test-sample.npz'}")
    for shipped, source in chosen.items():
        dest = target / f"{shipped}.pt"
        if not dest.exists():
            shutil.copy(work / f"{source}.pt", dest)
        certify_counts(dest, sample, n0=100, n=1000, precision="bf16", batch=128,
                       command=f"csrs certify --checkpoint {dest} --dataset sample:checkpoints/cifar10/test-sample.npz "
                               "--n0 100 --n 1000 --precision bf16")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
