"""The ``medsynth`` command: a table of commands, one module each in :mod:`gan.commands`.

``fit``/``validate``/``test``/``predict`` are LightningCLI (any ``--model.*``/``--data.*``/``--trainer.*`` key;
``--print_config`` shows the resolved config); every other command is an argparse command module. Global options
before the command: ``--debug`` (show tracebacks of user errors) and ``--quiet`` (warnings and errors only, no
progress bars: for logs and CI).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from types import ModuleType
from typing import Sequence

from gan.commands import EXIT_USAGE, UsageError
from gan.commands import demo as demo_cmd
from gan.commands import demo_data as demo_data_cmd
from gan.commands import evaluate as evaluate_cmd
from gan.commands import export as export_cmd
from gan.commands import generate as generate_cmd
from gan.commands import mix as mix_cmd
from gan.commands import preview as preview_cmd
from gan.commands import project as project_cmd
from gan.commands import train as train_cmd
from gan.commands import translate as translate_cmd

log = logging.getLogger("medsynth")

#: LightningCLI subcommands, all served by :mod:`gan.commands.train`.
LIGHTNING_COMMANDS: tuple[str, ...] = ("fit", "validate", "test", "predict")
#: argparse commands: name -> module with HELP, DESCRIPTION, add_arguments(parser), run(args) -> int.
COMMANDS: dict[str, ModuleType] = {
    "translate": translate_cmd,
    "evaluate": evaluate_cmd,
    "generate": generate_cmd,
    "mix": mix_cmd,
    "project": project_cmd,
    "export": export_cmd,
    "demo": demo_cmd,
    "demo-data": demo_data_cmd,
    "preview": preview_cmd,
}


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at the time (test capture, redirected output)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Plain-text help: descriptions as written, every option's default shown."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medsynth", formatter_class=HelpFormatter,
        description="Medical image synthesis with GANs: CycleGAN (CT <-> MR), pix2pix (CT -> PET), StyleGAN2 "
                    "(pathology tiles).",
        epilog="Training: medsynth fit --config experiments/base.yaml --config experiments/cyclegan_ct2mri_demo.yaml "
               "(fit/validate/test/predict are LightningCLI; add --help after them).")
    p.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (see `medsynth {name} --help`)", add_help=False)
    for name, module in COMMANDS.items():
        sp = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION, formatter_class=HelpFormatter)
        module.add_arguments(sp)
    return p


def _global_flags(argv: list[str]) -> tuple[list[str], bool, bool]:
    """Strip ``--debug``/``--quiet`` given before the command (LightningCLI would not know them)."""
    debug = quiet = False
    while argv and argv[0] in ("--debug", "--quiet"):
        debug, quiet = debug or argv[0] == "--debug", quiet or argv[0] == "--quiet"
        argv = argv[1:]
    return argv, debug or bool(os.environ.get("MEDSYNTH_DEBUG")), quiet


def configure_logging(quiet: bool = False) -> None:
    """One handler for the ``medsynth`` loggers (each line printed once, ``medsynth: ...``), INFO or WARNING.

    Args:
        quiet: warnings and errors only.
    """
    logger = logging.getLogger("medsynth")
    if not any(getattr(h, "_medsynth", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        handler._medsynth = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _user_errors() -> tuple[type[BaseException], ...]:
    from data.errors import DataError

    return (UsageError, DataError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
            ValueError)


def _quiet_third_party_warnings() -> None:
    """Show warnings as one ``medsynth: warning: ...`` line, and drop third-party notices that only say what the
    CLI does on purpose (it passes its arguments to LightningCLI; resumed runs reuse their checkpoint folder)."""
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"medsynth: warning: {message}\n"
    for text in ("LightningCLI's args parameter is intended", r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                 "Checkpoint directory .* exists and is not empty", "The number of training batches"):
        warnings.filterwarnings("ignore", message=text)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medsynth`` console script; returns the exit status.

    Args:
        argv: arguments after ``medsynth`` (default: ``sys.argv[1:]``).
    """
    args_list, debug, quiet = _global_flags(list(sys.argv[1:] if argv is None else argv))
    configure_logging(quiet)
    _quiet_third_party_warnings()
    command = args_list[0] if args_list else None
    try:
        if command in LIGHTNING_COMMANDS:
            return train_cmd.main(args_list, quiet=quiet)
        args = _parser().parse_args(args_list)
        args.quiet = quiet
        return int(COMMANDS[args.command].run(args) or 0)
    except _user_errors() as e:
        if debug:
            raise
        print(f"medsynth {command or ''}: error: {e}".replace("  ", " "), file=sys.stderr)
        print("(run with `medsynth --debug ...` for the traceback)", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
