"""Command line: csrs certify | train | report | jobs | import | dashboard (also python -m csrs_core).

Exit codes: 0 success; 2 bad input (a setting out of range, a missing or unusable file: the message
names it); 130 / 143 interrupted by SIGINT / SIGTERM (a rerun resumes); 1 a file could not be written
(a full disk, a read-only folder: the message names it; a rerun resumes) or any other failure."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from csrs_core import CSRSError
from csrs_core.settings import CERTIFY, REPORT, TRAIN, SettingError, check_settings, parse_shard
from csrs_core.cli.options import add_arguments
from csrs_core.runtime.allocator import retain_freed_memory
from csrs_core.runtime.signals import Stopped, stop_on_sigterm

EXIT_BAD_INPUT = 2


def _progress(a, path):
    from csrs_core.runtime.progress import ProgressLog, TerminalProgress
    return ProgressLog(path, display=None if a.quiet else TerminalProgress())


def cmd_certify(a):
    from csrs_core.certification.certificates import certified_cost, certify_from_counts
    from csrs_core.certification.cost import parse_cost
    from csrs_core.certification.metrics import expected_cost, summarize
    from csrs_core.data import load_dataset, select_examples
    from csrs_core.models.checkpoints import read_meta
    from csrs_core.runtime.device import set_threads
    from csrs_core.sampling.stage_a import counts_record

    t0 = time.time()
    s = check_settings(CERTIFY, vars(a))
    shard = parse_shard(s["shard"])
    if s["sequential"] and s["mode"] == "paper":
        raise SettingError("--sequential reads confidence sequences in sound mode only; --mode paper does not apply "
                           "(leave --mode at sound)")
    if s["save_sample"] and os.path.lexists(s["save_sample"]):
        raise SettingError(f"--save-sample = {s['save_sample']!r} exists already: give a new file name (an existing "
                           "file is never overwritten)")
    set_threads(s["threads"])
    stop_on_sigterm()  # like Ctrl-C: partial counts stay, exit code 143
    data = load_dataset(s["dataset"], s["split"], root=s["data_root"], image_size=s["image_size"])
    if s["num_examples"] and s["num_examples"] > len(data):
        print(f"note: --num-examples {s['num_examples']} is more than the {len(data)} examples of {s['dataset']}; "
              f"certifying all {len(data)}", file=sys.stderr)
    if s["per_class"] and s["per_class"] > (smallest := int(data.labels.bincount().min())):
        print(f"note: --per-class {s['per_class']} is more than the smallest class has ({smallest}); "
              "such classes are certified whole", file=sys.stderr)
    data = data.subset(select_examples(data.labels.numpy(), s["num_examples"], s["per_class"], s["sample_seed"]))
    cost = parse_cost(s["cost"], data.num_classes, data.classes)
    if s["save_sample"]:
        data.save_sample(s["save_sample"])
    command = "csrs " + " ".join(shlex.quote(x) for x in sys.argv[1:]) if a.record_command else None
    sequential = {"eps": s["eps"], "alpha": s["alpha"], "cost": cost} if s["sequential"] else None
    record = counts_record(s["checkpoint"], data, s["n0"], s["n"], s["batch"], s["seed"], s["sigma"],
                           s["device"], s["precision"], _progress(a, s["progress"]), command=command,
                           sequential=sequential, shard=shard)
    if shard is not None:
        print(f"shard {shard[0]}/{shard[1]} sampled ({time.time() - t0:.1f} s); once every shard is done, the same "
              "command without --shard merges them into one record (sampling only what they lack)")
        return 0
    if record is None:  # a non-zero torchrun rank: rank 0 reports
        return 0
    if "tensors_sha256" not in read_meta(s["checkpoint"]):
        print(f"note: {s['checkpoint']} carries no digest of its weights (saved by another tool or an older CSRS), so "
              "a changed byte in them could not be detected; `csrs import` or a new training run adds one",
              file=sys.stderr)
    read = {"sigma": record.meta["sigma"], "alpha": s["alpha"], "mode": s["mode"], "bounds": record.bounds}
    table = certify_from_counts(record.counts0, record.counts, record.labels, cost, **read)
    costs = None if cost.is_binary and not s["out"] else certified_cost(
        record.counts0, record.counts, record.labels, cost, eps=list(s["eps"]), **read)
    if s["out"]:  # written before anything is printed, so a closed pipe cannot lose it
        from csrs_core.runtime.atomic import atomic_write_text
        table.insert(0, "index", record.indices)
        table["n_used"] = record.n_used
        for eps, column in zip(s["eps"], costs):
            table["certified_cost" if len(s["eps"]) == 1 else f"certified_cost_eps={eps:g}"] = column
        atomic_write_text(s["out"], table.to_csv(index=False))
    source = "reused cached counts" if record.from_cache else "sampled"
    if record.reused:
        source += f" ({record.reused} examples reused from an overlapping record)"
    budget = f"n={s['n']}" if not s["sequential"] else (
        f"sequential (cap n={s['n']:,}): {record.n_used.mean():,.0f} estimation samples per example on average "
        f"({s['n'] / max(record.n_used.mean(), 1):.0f}× fewer than the cap)")
    print(f"{source}: {len(table)} examples, n0={s['n0']}, {budget}, sigma={record.meta['sigma']}, "
          f"precision {record.meta['precision']}, {time.time() - t0:.1f} s; record {record.path}")
    print(f"cost {cost.describe()}, mode {s['mode']}, alpha {s['alpha']}"
          + (", bounds: confidence sequences" if s["sequential"] else ""))
    for i, eps in enumerate(s["eps"]):
        summary = summarize(table, eps)
        print(f"eps {eps:g}: Acc {summary['acc']:.3f}  Rob_cs {summary['rob_cs']:.3f}  Rob_std {summary['rob_std']:.3f}"
              f"  Rob_non {summary['rob_non']:.3f}  ({summary['n_sensitive']} sensitive of {summary['n']})")
        if not cost.is_binary:
            print(f"  certified expected cost at eps {eps:g}: {expected_cost(costs[i]):.4f} (mean over all examples "
                  "of the worst cost any perturbation within eps can cause, certified)")
    return 0


def cmd_train(a):
    from csrs_core.training.loop import TrainConfig, train
    cfg = TrainConfig(**{k: getattr(a, k) for k in TRAIN})
    meta = train(cfg, display=None if a.quiet else _progress(a, None).display)
    print(f"{cfg.checkpoint_path}: {meta['epochs_done']}/{cfg.epochs} epochs")
    return 0


def cmd_report(a):
    import pandas as pd

    from csrs_core.cli.report import to_latex
    from csrs_core.reports import (COST_COLUMNS, INTERVAL_COLUMNS, RADIUS_COLUMNS, STAT_COLUMNS, metric_columns,
                                   report_table)
    s = check_settings(REPORT, vars(a))
    if s["seeds"]:
        return _report_seeds(s)
    report = report_table(s["checkpoints"], s["cost"], s["eps"], s["alpha"], s["mode"], baseline=s["baseline"],
                          cost_threshold=s["cost_threshold"], examples=s["examples"])
    under_table = [] if s["format"] in ("csv", "latex") else report.differences  # beside the numbers they affect
    for note in report.notes:
        if note not in under_table:
            print(f"note: {note}", file=sys.stderr)
    df = report.table
    if df.empty:
        raise CSRSError(f"no checkpoint with a valid certification record under {s['checkpoints']}")
    # the header says what the numbers mean; on stdout it would break the CSV/LaTeX a tool reads
    print(report.header, file=sys.stdout if s["format"] == "text" else sys.stderr)

    def p_value(v):
        return "" if pd.isna(v) else f"{v:.4g}"

    p_columns = [c for c in ("p_acc", "p_rob_cs", "p_acc_holm", "p_rob_cs_holm", "p_expected_cost") if c in df]
    if s["format"] == "csv":
        out = df[metric_columns(report.eps) + STAT_COLUMNS + INTERVAL_COLUMNS + [c for c in COST_COLUMNS if c in df]
                 + RADIUS_COLUMNS].copy()
        for c in p_columns:
            out[c] = out[c].map(p_value)
        print(out.to_csv(index=False, float_format="%.4f"), end="")
    elif s["format"] == "latex":
        eps = ", ".join(f"{e:g}" for e in report.eps)
        print(to_latex(df, f"Cost {s['cost']}, eps = {eps}, mode {s['mode']}, alpha {s['alpha']}", report.eps))
    else:
        shown = df.copy()
        for what in ("acc", "rob_cs"):  # the interval as one column, beside the p-values
            shown[f"{what}_ci"] = [f"[{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else "-"
                                   for lo, hi in zip(df[f"{what}_lo"], df[f"{what}_hi"])]
        shown = shown.drop(columns=["acc_lo", "acc_hi", "rob_cs_lo", "rob_cs_hi"])
        shown = shown[[c for c in shown if c not in RADIUS_COLUMNS] + RADIUS_COLUMNS]  # last, after the intervals
        for c in (c for c in ("d_acc", "d_rob_cs", "d_expected_cost") if c in df):  # "-": not compared
            shown[c] = shown[c].map(lambda v: "-" if pd.isna(v) else f"{v:+.3f}")
        for c in p_columns:   # small p-values in full; "-": the baseline or not compared
            shown[c] = shown[c].map(lambda v: "-" if pd.isna(v) else f"{v:.2g}")
        if s["format"] == "markdown":
            shown = shown.drop(columns=["record"]).map(lambda v: f"{v:.3f}" if isinstance(v, float) else str(v))
            print("| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns))
            for row in shown.itertuples(index=False):
                print("| " + " | ".join(row) + " |")
        else:
            print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        for line in under_table:
            print(f"note: {line}")
    return 0


def _report_seeds(s: dict) -> int:
    """`csrs report --seeds`: the table over training seeds (csrs_core.seed_report)."""
    from csrs_core.seed_report import seeds_table
    if s["format"] == "latex":
        raise CSRSError("--format latex is not available with --seeds; use --format csv or markdown")
    folders = [s["checkpoints"]] + [f.strip() for f in s["seeds"].split(",") if f.strip()]
    report = seeds_table(folders, s["cost"], s["eps"][0], s["alpha"], s["mode"], s["baseline"], s["examples"])
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.header, file=sys.stdout if s["format"] == "text" else sys.stderr)
    df = report.table
    if s["format"] == "csv":
        print(df.to_csv(index=False, float_format="%.4f"), end="")
        return 0
    shown = df.copy()
    for c in ("d_acc", "d_rob_cs"):
        shown[c] = shown[c].map(lambda v: f"{v:+.3f}")
    for c in ("p_acc_seeds", "p_rob_cs_seeds"):
        shown[c] = shown[c].map(lambda v: "-" if v != v else f"{v:.2g}")
    if s["format"] == "markdown":
        shown = shown.map(lambda v: f"{v:.3f}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns))
        for row in shown.itertuples(index=False):
            print("| " + " | ".join(row) + " |")
    else:
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_jobs(a):
    from csrs_core import jobs
    if a.action == "list":
        for j in jobs.list_jobs(a.root):
            print(f"{j['id']}  {j['state']:9s}  {j.get('kind', '?'):8s}  {j.get('out', '')}")
    elif a.action == "cancel":
        if not a.id:
            raise CSRSError("jobs cancel needs a job id (see `csrs jobs list`)")
        jobs.cancel(a.root, a.id)
    return 0


def cmd_import(a):
    from csrs_core.interop.importers import import_checkpoint
    sigma = TRAIN["sigma"].check(a.sigma, "--sigma")
    meta = import_checkpoint(a.src, a.out, a.arch, a.dataset, sigma, a.format, a.mean or None, a.std or None)
    print(f"{a.out}: {meta['arch']} on {meta['dataset']} ({len(meta['classes'])} classes), sigma {meta['sigma']}, "
          f"from {meta.get('source_format')} file {meta.get('source_file')}")
    return 0


def cmd_dashboard(a):
    from csrs_core.dashboard.launch import launch
    return launch(a.checkpoints, a.data, a.address, a.port)


def build_parser():
    parser = argparse.ArgumentParser(prog="csrs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("certify", help="certify a checkpoint on a data set (stage A stored, stage B printed)",
                       description="Sample the smoothed classifier's votes (stage A, stored beside the checkpoint "
                       "and reused) and print the certified metrics (stage B) for a cost matrix.")
    add_arguments(p, CERTIFY)
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--no-record-command", dest="record_command", action="store_false",
                   help="do not store this command line in the record (it is stored to say how to re-certify)")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("train", help="train a smoothed classifier (resumable)")
    add_arguments(p, TRAIN)
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("report", help="metrics per checkpoint from stored counts (no sampling)")
    add_arguments(p, REPORT)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("jobs", help="list or cancel background jobs started from the dashboard")
    p.add_argument("action", choices=["list", "cancel"])
    p.add_argument("id", nargs="?", help="job id (for cancel)")
    p.add_argument("--root", default="checkpoints", help="checkpoint folder whose .jobs/ to use (default checkpoints)")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("import", help="convert a checkpoint of Cohen et al., MACER, CS-RS or torchvision")
    p.add_argument("src", help="the source .pth/.pt file (loaded safely: tensors only)")
    p.add_argument("--out", required=True, help="the CSRS checkpoint to write (.pt)")
    p.add_argument("--arch", required=True, help="architecture, e.g. resnet110 or "
                   "cifar_resnet110, or MODULE:FACTORY for your own (docs/architectures.md)")
    p.add_argument("--dataset", required=True, help="data set the model was trained on (gives the class names)")
    p.add_argument("--sigma", required=True, help="noise level σ the model was trained with")
    p.add_argument("--format", default="auto", choices=["auto", "cohen", "macer", "cs-rs", "torchvision"],
                   help="source layout (default auto: detected from the file)")
    p.add_argument("--mean", default=None, help="normalisation mean, comma-separated (default: the format's)")
    p.add_argument("--std", default=None, help="normalisation std, comma-separated (default: the format's)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("dashboard", help="open the dashboard (loopback only unless --address says otherwise)")
    p.add_argument("--checkpoints", default=None, help="checkpoint folder (default $CSRS_CHECKPOINTS, else ./checkpoints "
                   "when it exists, else the shipped demo, read-only)")
    p.add_argument("--data", default=None, help="data folder (default $CSRS_DATA, else ./data)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.set_defaults(func=cmd_dashboard)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()  # sampling and training allocate the same large buffers pass after pass
    try:
        return args.func(args)
    except CSRSError as exc:
        code = getattr(exc, "exit_code", EXIT_BAD_INPUT)
        print(f"error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("interrupted (SIGINT); rerun the same command to resume", file=sys.stderr)
        return 130
    except Stopped as exc:
        print(f"interrupted ({exc}); rerun the same command to resume", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader of our output went away (`| head`): files are already written
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a lock or progress file that could not be made, a disk that filled up
        print(f"error: {exc.filename or 'a file'}: {exc.strerror or exc}; free some disk space or make the folder "
              "writable, then run the same command again (finished work is kept)", file=sys.stderr)
        return 1


def main_exit() -> None:
    """Entry point of the `csrs` command."""
    raise SystemExit(main())
