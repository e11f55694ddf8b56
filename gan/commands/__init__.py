"""One module per ``medsynth`` command, each with ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.

A command module imports only the standard library at module level, so ``medsynth <command> --help`` appears at
once; the work (torch, Lightning, the data layer) is imported inside ``run``. ``gan.cli`` holds the table of
commands and turns user errors into one clear message and exit status :data:`EXIT_USAGE`.
"""
from __future__ import annotations

#: Exit status of a successful command.
EXIT_OK = 0
#: Exit status of a user error (bad path, unknown key, wrong modality, existing output without --overwrite).
EXIT_USAGE = 2
#: Exit status of a synthetic data set the memorization audit refused to release.
EXIT_AUDIT_FAILED = 3


class UsageError(Exception):
    """A mistake in what the user asked for; ``medsynth`` prints the message (no traceback) and exits with 2.

    Args:
        message: what is wrong and how to fix it, naming the file or option.
    """


__all__ = ["EXIT_AUDIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageError"]
