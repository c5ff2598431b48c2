"""Widgets built from csrs_core.settings: the same name, default, range and help as the CLI."""
from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from csrs_core.settings import Option

PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def option_widget(opt: Option, where=st, label: str | None = None, key: str | None = None, **overrides):
    """A widget for `opt`: a select box for choices, a number input bounded by the option's range
    (empty allowed when the option may be unset), else a text box. The value is checked again by
    the core when the job starts."""
    label = label or opt.name.replace("_", " ")
    help_text = opt.help + ("" if opt.default is None else f" (default {opt.text(opt.default)})")
    default = overrides.pop("value", opt.default)
    if opt.choices:
        return where.selectbox(label, opt.choices, index=opt.choices.index(default), help=help_text, key=key)
    if opt.type is bool:
        return where.checkbox(label, value=bool(default), help=help_text, key=key, **overrides)
    if opt.type is tuple:
        return where.text_input(label, value=opt.text(default), help=help_text, key=key, **overrides)
    if opt.type in (int, float):
        low = opt.low if opt.low is not None else None
        if low is not None and opt.low_open:
            low = low + (1 if opt.type is int else 1e-6)
        step = 1 if opt.type is int else 0.01
        value = None if default is None else opt.type(default)
        return where.number_input(label, min_value=None if low is None else opt.type(low), value=value, step=step,
                                  help=help_text, key=key, placeholder="default" if value is None else None,
                                  format="%d" if opt.type is int else "%.4g", **overrides)
    return where.text_input(label, value=default or "", help=help_text, key=key, **overrides) or None


def inside_folder(root: Path, text: str, what: str) -> Path:
    """`root/text` when it stays inside `root` (no absolute path, '..', link or odd character);
    ValueError with a message otherwise."""
    if not text or "\x00" in text or any(ord(c) < 32 for c in text):
        raise ValueError(f"{what}: give a folder name inside {root} (no control characters)")
    if Path(text).is_absolute() or ".." in Path(text).parts:
        raise ValueError(f"{what}: {text!r} must be a folder inside {root}, not an absolute path or '..'")
    path = (root / text).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"{what}: {text!r} leads outside {root}")
    return path


def case_folder(root: Path, text: str) -> Path:
    """inside_folder() for a case folder that the dashboard writes into: hidden folders (such as
    `.jobs`, where background jobs live) and record folders (`NAME.certs`) are refused."""
    path = inside_folder(root, text, "Case folder")
    if any(part.startswith(".") or part.endswith(".certs") for part in Path(text).parts if part != "."):
        raise ValueError(f"Case folder: {text!r} is reserved (hidden folders and NAME.certs record folders are "
                         "the dashboard's own); choose a plain name such as cifar10")
    return path


def plain_name(text: str, what: str) -> str:
    """A file or folder name of letters, digits, '_', '-' and '.'; ValueError otherwise."""
    if not PLAIN_NAME.fullmatch(text or ""):
        raise ValueError(f"{what}: letters, digits, '_', '-' and '.', at most 64 characters; got {text!r}")
    return text
