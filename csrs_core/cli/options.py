"""The command line's view of the settings (csrs_core.settings): argparse arguments built from
their definitions, and the argument list that reproduces a set of values (the dashboard's jobs)."""
from __future__ import annotations

from csrs_core.settings import Option, check_settings


def add_arguments(parser, options: dict[str, Option]) -> None:
    """argparse arguments for `options`, with their help, default and allowed range; values are
    checked by `check_settings`, so a bad value gets the same message as in the Python API."""
    for opt in options.values():
        default = "" if opt.default is None else f" (default {opt.default})"
        allowed = f" [{opt.allowed()}]" if (opt.choices or opt.low is not None) else ""
        parser.add_argument(opt.flag, dest=opt.name, default=opt.default, required=opt.required,
                            metavar=opt.name.upper() if not opt.choices else "{" + ",".join(opt.choices) + "}",
                            help=opt.help + default + allowed)


def to_argv(options: dict[str, Option], values: dict) -> list[str]:
    """Command-line arguments for `values` (checked first), leaving out those at their default."""
    checked = check_settings(options, values)
    argv = []
    for name, value in checked.items():
        if name in options and value is not None and (value != options[name].default or options[name].required):
            argv += [options[name].flag, str(value)]
    return argv
