"""Tiny StyleGAN2 generators, checkpoints and exports for the latent-API, command and notebook tests.

The generators are 32 px with 32-d latents and 32 channels, seeded, with non-zero noise strengths and w averages
set to the means of the mapping's own outputs (a fresh network has zero averages, which would make truncation
trivially pull to the origin).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gan.nets.stylegan2 import Generator

#: Constructor arguments of the tiny generator (num_classes is added per test).
TINY_G: dict[str, Any] = dict(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32)
#: Class names of the tiny conditional generator and of the tiny checkpoint (the last is the rare one).
CLASSES = ["stroma", "tumor", "necrosis"]

_cache: dict[str, Path] = {}


def tiny_generator(num_classes: int = 3, *, seed: int = 0) -> Generator:
    """A seeded tiny generator (eval mode) with noise strengths 0.2 and w averages set from 512 of its own ws.

    Args:
        num_classes: 0 for an unconditional generator.
        seed: seed of the weights (the global RNG is left as it was).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(num_classes=num_classes, **TINY_G).eval()
        with torch.no_grad():
            for layer in G.synthesis.noise_layers():
                layer.noise_strength.fill_(0.2)
            z = torch.randn(512, G.z_dim)
            label = torch.arange(512) % num_classes if num_classes else None
            ws = G.mapping(z, label)
            G.mapping.update_w_avg(*G.mapping.w_stats(ws, label), beta=0.0)
    return G


def tiny_checkpoint(factory: Any) -> Path:
    """A StyleGAN2 ``.ckpt`` written by a Lightning Trainer after two training steps (built once per session).

    Args:
        factory: pytest's ``tmp_path_factory``.
    """
    if "ckpt" not in _cache:
        from gan.models import StyleGAN2
        from tests.helpers import cpu_trainer

        tmp = factory.mktemp("tiny_stylegan2")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = StyleGAN2(resolution=32, class_names=CLASSES, mpp=0.5,
                               network={"z_dim": 32, "w_dim": 32, "mapping_layers": 2, "channel_base": 512,
                                        "channel_max": 32},
                               evaluation={"grid_seeds": 2, "diversity_tiles": 2, "lpips_pretrained": False})
            tiles = [{"image": (torch.rand(3, 32, 32) * 2 - 1), "label": i % 3} for i in range(16)]
            loader = torch.utils.data.DataLoader(tiles, batch_size=8)
            trainer = cpu_trainer(tmp, limit_train_batches=2, limit_val_batches=0)
            trainer.fit(module, loader)
        path = tmp / "tiny.ckpt"
        trainer.save_checkpoint(path)
        _cache["ckpt"] = path
    return _cache["ckpt"]


def tiny_export(factory: Any, num_classes: int = 3) -> Path:
    """An export folder of :func:`tiny_generator` (written by ``save_exported``, built once per session).

    Args:
        factory: pytest's ``tmp_path_factory``.
        num_classes: classes of the generator (names from :data:`CLASSES` when 3).
    """
    key = f"export{num_classes}"
    if key not in _cache:
        from gan.nets.stylegan2 import save_exported

        folder = factory.mktemp(f"tiny_export{num_classes}") / "export"
        names = CLASSES[:num_classes] if num_classes else []
        save_exported(tiny_generator(num_classes), folder,
                      metadata={"class_names": names, "mpp": 0.5, "tile_size": 32, "checkpoint_sha256": "0" * 64})
        _cache[key] = folder
    return _cache[key]
