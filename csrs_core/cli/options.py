"""The command line's view of the settings (csrs_core.settings): argparse arguments built from
their definitions, and the argument list that reproduces a set of values (the dashboard's jobs)."""
from __future__ import annotations

from csrs_core.settings import Option, check_settings


def add_arguments(parser, options: dict[str, Option]) -> None:
    """argparse arguments for `options`, with their help, default and allowed range; values are
    checked by `check_settings`, so a bad value gets the same message as in the Python API."""
    for opt in options.values():
        default = "" if opt.default is None else f" (default {opt.text(opt.default)})"
        if opt.type is bool:
            parser.add_argument(opt.flag, dest=opt.name, action="store_true", help=opt.help + default)
            continue
        allowed = f" [{opt.allowed()}]" if (opt.choices or opt.low is not None) else ""
        metavar = "{" + ",".join(opt.choices) + "}" if opt.choices else opt.name.upper()
        parser.add_argument(opt.flag, dest=opt.name, default=opt.default, required=opt.required,
                            metavar=metavar + ("[,...]" if opt.type is tuple else ""), help=opt.help + default + allowed)


def to_argv(options: dict[str, Option], values: dict) -> list[str]:
    """Command-line arguments for `values` (checked first), leaving out those at their default."""
    checked = check_settings(options, values)
    argv = []
    for name, value in checked.items():
        if name in options and value is not None and (value != options[name].default or options[name].required):
            if options[name].type is bool:
                argv += [options[name].flag] if value else []
            else:
                argv += [options[name].flag, options[name].text(value)]
    return argv
