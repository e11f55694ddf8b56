"""What the StyleGAN2 commands (``generate`` for tiles, ``mix``, ``project``, ``export``) share: ``--ckpt`` accepts a
``.ckpt`` of ``medsynth fit`` or an export folder, ``--label`` a class name or index, and mistakes become
:class:`gan.commands.UsageError` naming the path or the classes. Imports only the standard library at import time.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gan.nets.stylegan2 import Generator

log = logging.getLogger("medsynth.stylegan")


def open_generator(path: str | Path, device: str = "cpu") -> tuple[Generator, dict[str, Any]]:
    """The StyleGAN2 generator of ``--ckpt`` (a ``.ckpt`` of ``medsynth fit``: its EMA generator; or an export
    folder) in eval mode, and what outputs made with it record (:func:`gan.models.checkpoint.load_generator`).

    Args:
        path: the ``--ckpt`` value.
        device: torch device of the generator.

    Raises:
        UsageError: no such path, or not a StyleGAN2 checkpoint / export folder (the message names the path).
    """
    from gan.commands import UsageError

    p = Path(path)
    if not p.exists():
        raise UsageError(f"--ckpt {p}: no such file or folder (give a StyleGAN2 .ckpt written by `medsynth fit` or "
                         "a folder written by `medsynth export`)")
    from gan.models.checkpoint import load_generator

    try:
        return load_generator(p, device=device)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--ckpt {exc}") from exc


def resolve_class(value: str | None, G: Generator, info: dict[str, Any]) -> tuple[int | None, str | None]:
    """``--label`` as ``(class index, class name)``: ``(None, None)`` for an unconditional generator; for a
    conditional one a name or an index, or (no ``--label``) the first class, said in the log.

    Args:
        value: the ``--label`` value (a class name or index), or None.
        G: the generator.
        info: what :func:`open_generator` returned beside it (``class_names``).

    Raises:
        UsageError: a label for an unconditional generator, or an unknown class (the message lists the classes).
    """
    from gan.commands import UsageError
    from gan.style import resolve_label

    names = list(info.get("class_names") or [])
    if value is None and G.num_classes:
        name = names[0] if names else None
        log.info("no --label given: using class 0%s (the generator has %d classes)",
                 f" ({name})" if name else "", G.num_classes)
        return 0, name
    try:
        index = resolve_label(value, class_names=names, num_classes=G.num_classes)
    except ValueError as exc:
        raise UsageError(f"--label: {exc}") from exc
    if index is None:
        return None, None
    return index, names[index] if index < len(names) else None


__all__ = ["open_generator", "resolve_class"]
