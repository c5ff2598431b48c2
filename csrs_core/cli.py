"""Command line: python -m csrs_core certify | train | report | jobs."""
from __future__ import annotations

import argparse
import sys
import time

from csrs_core import CSRSError


def _add_cert_args(p):
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", required=True, help="cifar10, cifar10-jpeg, imagenette, ham10000, "
                   "imagefolder:PATH, sample:PATH.npz or synthetic")
    p.add_argument("--split", default="test")
    p.add_argument("--data-root", default=None, help="folder holding the data sets (default $CSRS_DATA or ./data)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--num-examples", type=int, default=None)
    p.add_argument("--per-class", type=int, default=None)
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the fixed example sample")
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=None, help="default: the checkpoint's training sigma")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cost", default="overall")
    p.add_argument("--mode", default="sound", choices=["sound", "paper"])
    p.add_argument("--eps", type=float, default=0.25)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="CSV file for the per-example table")
    p.add_argument("--save-sample", default=None, help="also write the selected examples as a .npz sample")
    p.add_argument("--progress", default=None, help="JSON-lines progress file")


def cmd_certify(a):
    from csrs_core.cache import certify_counts
    from csrs_core.certify import certify_from_counts
    from csrs_core.cost import parse_cost
    from csrs_core.data import load_dataset, select_examples
    from csrs_core.device import set_threads
    from csrs_core.metrics import summarize
    from csrs_core.progress import ProgressLog

    t0 = time.time()
    set_threads(a.threads)
    data = load_dataset(a.dataset, a.split, root=a.data_root, image_size=a.image_size)
    data = data.subset(select_examples(data.labels.numpy(), a.num_examples, a.per_class, a.sample_seed))
    cost = parse_cost(a.cost, data.num_classes, data.classes)
    if a.save_sample:
        data.save_sample(a.save_sample)
    record = certify_counts(a.checkpoint, data, a.n0, a.n, a.batch, a.seed, a.sigma, a.device,
                            a.precision, ProgressLog(a.progress))
    if record is None:  # a non-zero torchrun rank: rank 0 reports
        return 0
    table = certify_from_counts(record.counts0, record.counts, record.labels, cost,
                                sigma=record.meta["sigma"], alpha=a.alpha, mode=a.mode)
    s = summarize(table, a.eps)
    source = "reused cached counts" if record.from_cache else "sampled"
    if record.reused:
        source += f", {record.reused} examples' counts reused from an overlapping cached sample,"
    print(f"{source} ({len(table)} examples, n0={a.n0}, n={a.n}, sigma={record.meta['sigma']}, "
          f"{time.time() - t0:.1f} s); cost {cost.describe()}, mode {a.mode}, alpha {a.alpha}, eps {a.eps}")
    print(f"Acc {s['acc']:.3f}  Rob_cs {s['rob_cs']:.3f}  Rob_std {s['rob_std']:.3f}  Rob_non {s['rob_non']:.3f}"
          f"  ({s['n_sensitive']} sensitive of {s['n']})")
    if a.out:
        from csrs_core.atomic import atomic_write_text
        table.insert(0, "index", record.indices)
        atomic_write_text(a.out, table.to_csv(index=False))
    return 0


def cmd_train(a):
    from csrs_core.training import TrainConfig, train
    cfg = TrainConfig(**{k: v for k, v in vars(a).items() if k not in ("command", "func")})
    meta = train(cfg)
    print(f"{cfg.checkpoint_path}: {meta['epochs_done']}/{cfg.epochs} epochs")
    return 0


def cmd_report(a):
    from csrs_core.report import report_table, to_latex
    df = report_table(a.checkpoints, a.cost, a.eps, a.alpha, a.mode)
    if df.empty:
        raise CSRSError(f"no checkpoint with cached certifications under {a.checkpoints}")
    if a.format == "csv":
        print(df[["checkpoint", "method", "acc", "rob_cs", "rob_std", "rob_non"]].to_csv(index=False, float_format="%.4f"), end="")
    elif a.format == "latex":
        print(to_latex(df, f"Cost {a.cost}, eps = {a.eps}, mode {a.mode}"))
    else:
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_jobs(a):
    from csrs_core import jobs
    if a.action == "list":
        for j in jobs.list_jobs(a.root):
            print(f"{j['id']}  {j['state']:9s}  {j['kind']:8s}  {j.get('out', '')}")
    elif a.action == "cancel":
        jobs.cancel(a.root, a.id)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m csrs_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("certify", help="certify a checkpoint on a data set (stage A cached, stage B printed)")
    _add_cert_args(p)
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("train", help="train a smoothed classifier")
    p.add_argument("--method", required=True, choices=["gaussian", "cohen-r", "macer", "cs-macer"])
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="checkpoint path (NAME or NAME.pt)")
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step"])
    p.add_argument("--lr-step", type=int, default=30)
    p.add_argument("--cost", default="none")
    p.add_argument("--weight", type=float, default=1.2)
    p.add_argument("--gauss-num", type=int, default=16)
    p.add_argument("--lam", type=float, default=None)
    p.add_argument("--gamma", type=float, default=8.0)
    p.add_argument("--gamma1", type=float, default=4.0)
    p.add_argument("--gamma2", type=float, default=16.0)
    p.add_argument("--beta", type=float, default=16.0)
    p.add_argument("--init", default=None, help="warm start from this checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--progress", default=None)
    p.add_argument("--log-every", type=int, default=10)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("report", help="metrics per checkpoint from cached counts")
    p.add_argument("--checkpoints", required=True)
    p.add_argument("--cost", required=True)
    p.add_argument("--eps", type=float, default=0.25)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--mode", default="sound", choices=["sound", "paper"])
    p.add_argument("--format", default="text", choices=["text", "csv", "latex"])
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("jobs", help="list or cancel background jobs")
    p.add_argument("action", choices=["list", "cancel"])
    p.add_argument("id", nargs="?")
    p.add_argument("--root", default="checkpoints")
    p.set_defaults(func=cmd_jobs)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CSRSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
