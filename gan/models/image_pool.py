"""History of generated images (Shrivastava et al. 2017), as used by CycleGAN to stabilise the discriminator."""
from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """Buffer of up to ``size`` past fakes; each query returns, per image, either it or a stored older one.

    With probability 0.5 a new image replaces a random stored one and the stored one is returned instead.
    The buffer and its random generator are part of :meth:`state_dict`, so a resumed run continues exactly.

    Args:
        size: buffer capacity (0 disables the pool: images pass through).
        seed: seed of the pool's own random generator.
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch of the same shape mixing ``images`` (detached) with stored ones."""
        if self.size == 0:
            return images.detach()
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand(1, generator=self.generator).item() > 0.5:
                j = int(torch.randint(len(self.images), (1,), generator=self.generator).item())
                old = self.images[j].to(img.device)
                self.images[j] = img.clone()
                out.append(old)
            else:
                out.append(img)
        return torch.cat(out, 0)

    def reseed(self, seed: int) -> None:
        """Restart the pool's random generator from ``seed`` (e.g. one stream per DDP rank).

        Args:
            seed: the new seed.
        """
        self.generator.manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        """Buffer contents (on CPU) and generator state."""
        return {"size": self.size, "images": [i.cpu() for i in self.images], "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.size = int(state["size"])
        self.images = list(state["images"])
        self.generator.set_state(state["rng"])
