"""Import checkpoints written by other randomized-smoothing projects into CSRS's own format.

Formats (layouts read from each project's public code):

  cohen        locuslab/smoothing code/train.py: {"epoch", "arch", "state_dict", "optimizer"}, where
               state_dict is that of Sequential(NormalizeLayer, net): keys "1.conv1.weight", ...
               ("1.module." when net is DataParallel-wrapped, as for their ImageNet resnet50). Their
               NormalizeLayer keeps mean/std as plain attributes, so they are not in the file; the
               project used (0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010) for CIFAR-10 and
               ImageNet's statistics for ImageNet. CS-RS's gaussian_train.py writes the same layout.
  macer        RuntianZ/macer main.py: {"net": state_dict of the bare ResNet_Cifar, "epoch"}; no
               normalisation anywhere (inputs in [0, 1] go straight into the network).
  cs-rs        TrustMLRG/CS-RS main.py/train.py: {"net": state_dict, "epoch"} where, for CIFAR-10, the
               network is Sequential(NormalizeLayer(Cohen's CIFAR-10 statistics), cifar resnet), so keys
               are "1.conv1.weight", ...; its certify.py also reads the Cohen layout above.
  torchvision  a plain torchvision ResNet state_dict (optionally under "state_dict" or "model"),
               ImageNet statistics by default.

The CIFAR ResNets of all three projects (bearpaw's conv1/bn1/layer1-3/fc with 1x1-conv+BN
"downsample" shortcuts) are the same network as CSRS's CifarResNet; parameters are renamed
(conv1->stem.0, bn1->stem.1, layerS.i->layers.k, downsample->shortcut, fc->head). Their fixed
8x8 average pool equals CSRS's global average pool for 32x32 inputs, the only size they accept.

Files are read with torch.load(weights_only=True) only; nothing is loaded partially; every
refusal is a CheckpointError naming what does not fit, and no output file is written then."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch

from csrs_core import CSRSError
from csrs_core.settings import NORMALISATION, TRAIN
from csrs_core.data import DATASETS, IMAGENET_MEAN, IMAGENET_STD
from csrs_core.models.architectures import (CifarResNet, architectures, build_model, canonical_arch,
                                            use_architecture)
from csrs_core.models.checkpoints import FORMAT, CheckpointError, file_digest, safe_load, save_checkpoint
from csrs_core.sampling.counts import check_logits

FORMATS = ("auto", "cohen", "macer", "cs-rs", "torchvision")

# Class names of the data sets a checkpoint can be imported for (known without data files).
DATASET_CLASSES = {name: list(spec.classes) for name, spec in DATASETS.items() if spec.classes}

COHEN_CIFAR10_MEAN, COHEN_CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
# The statistics inside NormalizeLayer (Cohen et al., CS-RS), per CSRS data set.
_NORMALIZE_LAYER_STATS = {
    "cifar10": (COHEN_CIFAR10_MEAN, COHEN_CIFAR10_STD),
    "cifar10-jpeg": (COHEN_CIFAR10_MEAN, COHEN_CIFAR10_STD),
    "imagenette": (IMAGENET_MEAN, IMAGENET_STD),
}
_IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

_FIRST_FEW = 5
_STAGE_KEY = re.compile(r"^layer(\d+)\.(\d+)\.(.+)$")
_CSRS_BLOCK_KEY = re.compile(r"^layers\.(\d+)\.(.+)$")
_PREFIX = re.compile(r"^(?:module\.)?(\d+)\.(?:module\.)?(.*)$")


def import_checkpoint(src, out, arch: str | None, dataset: str, sigma: float, fmt: str = "auto",
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                      method: str = "imported") -> dict:
    """Convert the checkpoint `src` (format `fmt`, or detected when "auto") into a CSRS checkpoint at
    `out` for `arch` (a CSRS name or an alias such as cifar_resnet110; None: taken from the file) and
    the named data set; `mean`/`std` override the format's normalisation. Returns the metadata written.
    Raises CheckpointError, writing nothing, when the file is unsafe, unreadable, of another layout,
    or does not fit the architecture or the data set's class count exactly."""
    src, out = Path(src), Path(out)
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown import format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if dataset not in DATASET_CLASSES:
        raise CheckpointError(f"cannot import for data set {dataset!r}: its class names are not known "
                              f"without its files; choose one of {', '.join(DATASET_CLASSES)}")
    classes = list(DATASET_CLASSES[dataset])
    sigma = TRAIN["sigma"].check(sigma, "--sigma")
    mean, std = _checked_statistics(mean, std)
    if out.suffix != ".pt":
        raise CheckpointError(f"--out {out} must end in .pt (the checkpoint listings show only .pt files)")
    if out.exists():
        what = "the source file" if src.exists() and out.resolve() == src.resolve() else "an existing file"
        raise CheckpointError(f"--out {out} is {what}; importing over it would make its certifications stale: "
                              "choose a new path, or delete it first")

    payload, fmt, state, has_norm_layer, file_norm, file_arch, kind = _read_source(src, fmt)
    arch = _resolve_arch(arch, file_arch, kind, state, src)

    fc = state.get("fc.weight")
    if fc is None or fc.dim() != 2:
        raise CheckpointError(f"{src} has no classifier layer fc.weight; it is not a ResNet of a known layout")
    if fc.shape[0] != len(classes):
        raise CheckpointError(f"{src} has {fc.shape[0]} output classes but data set {dataset} has "
                              f"{len(classes)} ({', '.join(classes)}); import it for a data set with "
                              f"{fc.shape[0]} classes")

    mean, std = _normalisation(fmt, dataset, has_norm_layer, file_norm, mean, std, src)
    model = build_model(arch, len(classes), mean, std)
    net = model[1]
    expected = _expected_source_names(net, kind, arch, src)
    if kind == "cifar":
        blocks, n = _blocks_per_stage(state), len(net.layers) // 3
        if blocks != [n] * 3:
            raise CheckpointError(f"{src} holds a CIFAR ResNet with {blocks} blocks per stage "
                                  f"(depth {6 * blocks[0] + 2}) but {arch} has {n} per stage")
    mapped = _check_and_map(state, expected, net.state_dict(), arch, src)
    full = {"0.mean": model[0].mean, "0.std": model[0].std}
    full.update({f"1.{k}": v for k, v in mapped.items()})
    try:
        model.load_state_dict(full, strict=True)
    except RuntimeError as exc:  # not expected after the checks above; never save a partial model
        raise CheckpointError(f"{src}: weights do not fit architecture {arch}: "
                              f"{str(exc).splitlines()[0]}") from None

    size = 32 if kind == "cifar" else 64
    check_logits(model, torch.rand((3, size, size), generator=torch.Generator().manual_seed(0)), len(classes), sigma,
                 torch.device("cpu"), "fp32", f"{src}: the imported model", error=CheckpointError,
                 outcome="nothing was written")
    meta = {"arch": arch, "classes": classes, "dataset": dataset, "sigma": sigma, "method": method,
            "mean": [float(x) for x in mean], "std": [float(x) for x in std],
            "source_file": src.name, "source_sha256": file_digest(src), "source_format": fmt}
    if file_arch is not None:
        meta["source_arch"] = file_arch
    if isinstance(payload, dict) and isinstance(payload.get("epoch"), int):
        meta["source_epoch"] = payload["epoch"]
    save_checkpoint(out, model.eval(), meta)
    return dict(meta)


def _read_source(src: Path, fmt: str) -> tuple:
    """The file read weights-only: (payload, format, state dict, has a normalisation layer, the file's
    normalisation, the file's architecture name, network kind); a CIFAR network offered as torchvision's
    is refused."""
    payload = safe_load(src)
    fmt = detect_format(payload, src) if fmt == "auto" else fmt
    state, has_norm_layer, file_norm, file_arch = _unwrap(payload, fmt, src)
    kind = _network_kind(state, src)
    if kind == "cifar" and fmt == "torchvision":
        raise CheckpointError(f"{src} holds a CIFAR ResNet (3x3 stem, 16 channels), not a torchvision "
                              "ResNet; use format cohen, macer or cs-rs")
    return payload, fmt, state, has_norm_layer, file_norm, file_arch, kind


def detect_format(payload, src="the file") -> str:
    """The format of an already loaded payload, from its keys and structure; raises CheckpointError
    when it is a CSRS checkpoint already or matches none of the supported layouts."""
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        raise CheckpointError(f"{src} is already a CSRS checkpoint; it needs no import")
    if not isinstance(payload, dict):
        raise CheckpointError(f"{src} holds a {type(payload).__name__}, not a dict of weights; "
                              "it matches none of the formats cohen, macer, cs-rs, torchvision")
    if _is_state_dict(payload.get("net")):
        return "cs-rs" if _sequential_prefixed(payload["net"]) else "macer"
    if _is_state_dict(payload.get("state_dict")) and "arch" in payload:
        return "cohen"
    inner = _bare_state_dict(payload)
    if inner is not None:
        if _sequential_prefixed(inner):
            raise CheckpointError(f"{src} holds a Sequential(normaliser, network) state_dict without the "
                                  "record of which normalisation it used; pass the format (cohen or cs-rs) "
                                  "and mean/std explicitly")
        if _network_kind(inner, src) == "torchvision":
            return "torchvision"
        raise CheckpointError(f"{src} holds a bare CIFAR ResNet state_dict that does not say how its "
                              "inputs were normalised; pass format macer (no normalisation), with mean and "
                              "std if it had one")
    raise CheckpointError(f"{src} matches none of the formats cohen ('arch' + 'state_dict'), macer/cs-rs "
                          f"('net'), torchvision (a state_dict); its top-level keys: {_first(payload)}")


# --- reading -------------------------------------------------------------------------------------

def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _bare_state_dict(payload: dict):
    """The state_dict in a torchvision-style file: the payload itself, or under 'state_dict'/'model'."""
    if _is_state_dict(payload):
        return payload
    for key in ("state_dict", "model"):
        if _is_state_dict(payload.get(key)):
            return payload[key]
    return None


def _sequential_prefixed(state: dict) -> bool:
    """Whether keys are those of Sequential(normaliser, network): "1.conv1.weight" (or with module.)."""
    return all(_PREFIX.match(k) for k in state)


def _first(keys) -> str:
    keys = list(keys)
    more = f" ... ({len(keys)} in all)" if len(keys) > _FIRST_FEW else ""
    return ", ".join(map(str, keys[:_FIRST_FEW])) + more


def _strip_module(state: dict) -> dict:
    """Drop a leading DataParallel 'module.' from every key when all keys carry it."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _unwrap(payload, fmt: str, src: Path):
    """(network state_dict without Sequential/DataParallel prefixes, whether a normaliser preceded the
    network, normalisation stored in the file or None, the file's architecture name or None)."""
    if not isinstance(payload, dict):
        raise CheckpointError(f"{src} holds a {type(payload).__name__}, not a dict; it is not in format {fmt}")
    file_arch = payload.get("arch") if isinstance(payload.get("arch"), str) else None
    if fmt == "cohen":
        if not _is_state_dict(payload.get("state_dict")):
            raise CheckpointError(f"{src} is not in format cohen: it lacks a 'state_dict' of tensors "
                                  f"(top-level keys: {_first(payload)})")
        state = payload["state_dict"]
    elif fmt == "macer":
        state = payload["net"] if _is_state_dict(payload.get("net")) else _bare_state_dict(payload)
        if state is None:
            raise CheckpointError(f"{src} is not in format macer: it lacks a 'net' state_dict "
                                  f"(top-level keys: {_first(payload)})")
        if _sequential_prefixed(_strip_module(state)):
            raise CheckpointError(f"{src} is not in format macer: its network follows a normalisation layer "
                                  "(keys like '1.conv1.weight'), as CS-RS saves it; use format cs-rs")
    elif fmt == "cs-rs":
        if _is_state_dict(payload.get("net")):
            state = payload["net"]
        elif _is_state_dict(payload.get("state_dict")):
            state = payload["state_dict"]
        else:
            raise CheckpointError(f"{src} is not in format cs-rs: it lacks a 'net' or 'state_dict' of tensors "
                                  f"(top-level keys: {_first(payload)})")
    else:  # torchvision
        state = _bare_state_dict(payload)
        if state is None:
            raise CheckpointError(f"{src} is not in format torchvision: expected a state_dict of tensors "
                                  f"(or one under 'state_dict' or 'model'); top-level keys: {_first(payload)}")
        file_arch = None
    state = _strip_module(dict(state))
    if not _sequential_prefixed(state):
        return state, False, None, file_arch
    if fmt == "torchvision":
        raise CheckpointError(f"{src} is not a plain torchvision state_dict: its keys carry a Sequential index "
                              f"({_first(state)}); use format cohen or cs-rs")
    net, norm, other = {}, {}, []
    for key, value in state.items():
        index, rest = _PREFIX.match(key).groups()
        if index == "1":
            net[rest] = value
        elif index == "0":
            norm[rest] = value
        else:
            other.append(key)
    if other:
        raise CheckpointError(f"{src}: Sequential has more than a normaliser (0) and a network (1): "
                              f"unexpected keys {_first(other)}")
    return net, True, _norm_from_buffers(norm, src), file_arch


def _norm_from_buffers(norm: dict, src: Path):
    """(mean, std) when the normaliser stored them as buffers (means/sds or mean/std), else None."""
    if not norm:
        return None
    for m_key, s_key in (("means", "sds"), ("mean", "std")):
        if set(norm) == {m_key, s_key}:
            mean, std = norm[m_key].flatten().tolist(), norm[s_key].flatten().tolist()
            if len(mean) == len(std) == 3:
                return tuple(mean), tuple(std)
    raise CheckpointError(f"{src}: the normalisation layer holds unexpected tensors: {_first(norm)}")


# --- what the network is -------------------------------------------------------------------------

def _network_kind(state: dict, src) -> str:
    """'cifar' (3x3 stem, 16 channels, three stages) or 'torchvision' (7x7 stem, four stages)."""
    conv1 = state.get("conv1.weight")
    stages = {int(m[1]) for m in map(_STAGE_KEY.match, state) if m}
    if conv1 is None or conv1.dim() != 4:
        raise CheckpointError(f"{src}: no stem convolution conv1.weight; keys start {_first(state)}: "
                              "not a ResNet in the layout of Cohen et al., MACER, CS-RS or torchvision")
    if tuple(conv1.shape[2:]) == (3, 3) and stages == {1, 2, 3}:
        return "cifar"
    if tuple(conv1.shape[2:]) == (7, 7) and stages == {1, 2, 3, 4}:
        return "torchvision"
    if tuple(conv1.shape[2:]) == (7, 7) and stages == {1, 2, 3}:
        raise CheckpointError(f"{src} holds a three-stage ResNet with a 7x7 stem (CS-RS's ham_resnet); "
                              f"CSRS has no such architecture (it has {', '.join(architectures())})")
    raise CheckpointError(f"{src}: a stem of {tuple(conv1.shape)} with stages {sorted(stages)} matches no "
                          f"CSRS architecture ({', '.join(architectures())})")


def _blocks_per_stage(state: dict) -> list[int]:
    counts: dict[int, int] = {}
    for m in map(_STAGE_KEY.match, state):
        if m:
            counts[int(m[1])] = max(counts.get(int(m[1]), 0), int(m[2]) + 1)
    return [counts[s] for s in sorted(counts)]


def _inferred_arch(kind: str, state: dict, src) -> str:
    blocks = _blocks_per_stage(state)
    if kind == "cifar":
        if len(set(blocks)) != 1:
            raise CheckpointError(f"{src}: stages hold {blocks} blocks; a 6n+2 CIFAR ResNet has n in each")
        name = f"resnet{6 * blocks[0] + 2}"
    else:
        name = {(2, 2, 2, 2): "resnet18"}.get(tuple(blocks), f"torchvision ResNet with blocks {blocks}")
    if name not in architectures():
        raise CheckpointError(f"{src} holds a {name}, which CSRS does not have ({', '.join(architectures())})")
    return name


def _resolve_arch(arch, file_arch, kind, state, src) -> str:
    """The CSRS architecture to build: the one asked for (MODULE:FACTORY imported, as the user asked),
    checked against the file's own name, which is only looked up."""
    if arch is not None:
        try:
            use_architecture(arch)
        except CSRSError as exc:
            raise CheckpointError(str(exc)) from None
    inferred = _inferred_arch(kind, state, src) if arch is None and file_arch is None else None
    if file_arch is not None and canonical_arch(file_arch) not in architectures() and arch is None:
        raise CheckpointError(f"{src} was saved for architecture {file_arch!r}, which CSRS does not have "
                              f"({', '.join(architectures())})")
    name = canonical_arch(arch or file_arch or inferred)
    if file_arch is not None and canonical_arch(file_arch) != name:
        raise CheckpointError(f"{src} was saved for architecture {file_arch!r} but {arch!r} was asked for")
    return name


def _expected_source_names(net, kind: str, arch: str, src) -> dict[str, str]:
    """{source project's parameter name: CSRS name inside the network} for every tensor of `net`."""
    names = list(net.state_dict())
    if kind == "cifar":
        if type(net) is not CifarResNet:
            raise CheckpointError(f"{src} holds a plain CIFAR ResNet but architecture {arch} is not one "
                                  "(it adds layers the source network lacks); choose resnet8/20/56/110")
        n = len(net.layers) // 3
        return {_cifar_source_name(k, n): k for k in names}
    import torchvision  # here: it adds seconds to every CLI start
    if not isinstance(net, torchvision.models.ResNet):
        raise CheckpointError(f"{src} holds a torchvision ResNet but architecture {arch} is not one; "
                              "choose resnet18")
    return {k: k for k in names}


def _cifar_source_name(name: str, n: int) -> str:
    """bearpaw/Cohen/MACER/CS-RS name of a CSRS CifarResNet parameter (n blocks per stage)."""
    for ours, theirs in (("stem.0.", "conv1."), ("stem.1.", "bn1."), ("head.", "fc.")):
        if name.startswith(ours):
            return theirs + name[len(ours):]
    m = _CSRS_BLOCK_KEY.match(name)
    block, rest = int(m[1]), m[2]
    if rest.startswith("shortcut."):
        rest = "downsample." + rest[len("shortcut."):]
    return f"layer{block // n + 1}.{block % n}.{rest}"


def _check_and_map(state: dict, expected: dict[str, str], target: dict, arch: str, src) -> dict:
    """The network's tensors under CSRS names; CheckpointError listing missing, unexpected and
    mis-shaped tensors unless the file fits exactly (BatchNorm's num_batches_tracked, absent from
    files of PyTorch < 0.4.1 and unused in evaluation, is the only tensor filled in: with 0)."""
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(target[ours].shape)}"
              for k, ours in expected.items() if k in state and state[k].shape != target[ours].shape]
    problems = []
    if unexpected:
        problems.append(f"unexpected tensors {_first(unexpected)}")
    if missing:
        problems.append(f"missing tensors {_first(missing)}")
    if shapes:
        problems.append(f"shape mismatches (file vs {arch}) {_first(shapes)}")
    if problems:
        raise CheckpointError(f"{src} does not fit architecture {arch}: " + "; ".join(problems))
    return {ours: state[theirs] if theirs in state else torch.zeros_like(target[ours])
            for theirs, ours in expected.items()}


def _checked_statistics(mean, std) -> tuple:
    """The caller's mean and std (or None, None), checked against their settings: both or neither, three
    values each, within range."""
    mean, std = NORMALISATION["mean"].check(mean), NORMALISATION["std"].check(std)
    if (mean is None) != (std is None):
        raise CheckpointError("give both --mean and --std, or neither")
    if mean is None:
        return None, None
    if len(mean) != 3 or len(std) != 3:
        raise CheckpointError(f"--mean / --std need 3 values each (one per colour channel); got {mean}, {std}")
    return mean, std


def _normalisation(fmt, dataset, has_norm_layer, file_norm, mean, std, src):
    """(mean, std) for the CSRS Normalize layer: the caller's, else the file's, else the format's."""
    if mean is not None:
        return mean, std
    if file_norm is not None:
        return file_norm
    if fmt == "torchvision":
        return IMAGENET_MEAN, IMAGENET_STD
    if not has_norm_layer:  # the saved network took [0, 1] pixels directly
        return _IDENTITY
    if dataset not in _NORMALIZE_LAYER_STATS:
        raise CheckpointError(f"{src}: the {fmt} normalisation layer's statistics are not saved in the file "
                              f"and the project defines none for {dataset}; pass mean and std")
    return _NORMALIZE_LAYER_STATS[dataset]


def describe_source(src, dataset: str, fmt: str = "auto") -> dict:
    """What import_checkpoint(src, out, None, dataset, sigma, fmt) would take from the file, read the
    same way (weights only) and writing nothing: {"format": the layout (detected when "auto"),
    "arch": the CSRS architecture, "arch_from": "file" (the file names it) or "weights" (inferred
    from them), "outputs": the classifier's class count, "mean", "std": the normalisation used unless
    overridden, or None where the file and the format leave it to the caller}. CheckpointError, as
    import_checkpoint's, for a file whose format or architecture it would refuse."""
    src = Path(src)
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown import format {fmt!r}; choose one of {', '.join(FORMATS)}")
    _, fmt, state, has_norm_layer, file_norm, file_arch, kind = _read_source(src, fmt)
    arch = _resolve_arch(None, file_arch, kind, state, src)
    fc = state.get("fc.weight")
    outputs = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.dim() == 2 else None
    try:
        mean, std = _normalisation(fmt, dataset, has_norm_layer, file_norm, None, None, src)
    except CheckpointError:  # a normalisation layer whose statistics neither the file nor the project give
        mean = std = None
    return {"format": fmt, "arch": arch, "arch_from": "file" if file_arch else "weights", "outputs": outputs,
            "mean": None if mean is None else [float(x) for x in mean],
            "std": None if std is None else [float(x) for x in std]}
