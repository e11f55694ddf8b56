"""The project's DDP strategy for GANs, and the check that refuses strategies known to go wrong with them.

:class:`GANDDPStrategy` (registered as ``"ddp_gan"``) does what StyleGAN3's own training loop does instead of
wrapping the module in ``DistributedDataParallel``: it broadcasts rank 0's parameters and buffers once when training
starts, and before each optimiser step all-reduces (averages) the gradients of THAT optimiser's parameters in one
flattened buffer per dtype. So

* the generator and discriminator passes may use any subset of the parameters (no "parameters that were not used"
  error, no graph traversal to find them, nothing to declare static);
* gradients accumulated over several chunks inside ``training_step`` (``batch_gpu``) are synchronised once, at the
  step, with no ``no_sync`` bookkeeping;
* lazy regularisation steps (R1, path length), which touch one network only, need nothing special.

Every rank must step the same optimisers in the same order, which the modules guarantee (the schedule of every
step is a function of the global iteration). Lightning's ``ddp_find_unused_parameters_true`` works too and is
accepted; plain ``ddp`` and ``static_graph`` fail with two networks under ``toggle_optimizer`` and are refused by
:func:`check_strategy` with a message naming the strategies to use.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, StrategyRegistry
from torch import Tensor, nn

#: The strategy names this project trains with (``--trainer.strategy=...``).
SAFE_STRATEGIES: tuple[str, ...] = ("ddp_gan", "ddp_find_unused_parameters_true")


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_tensors(tensors: list[Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s values (one flattened broadcast per dtype/device).

    Args:
        tensors: the same list (shapes, dtypes, order) on every rank.
        src: the global rank whose values win.
    """
    if not _dist_ready():
        return
    for group in _groups(tensors).values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.broadcast(flat, src)
        offset = 0
        for t in group:
            n = t.numel()
            with torch.no_grad():
                t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


def _groups(tensors: list[Tensor]) -> dict[tuple[torch.dtype, torch.device], list[Tensor]]:
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for t in tensors:
        if t.numel():
            groups.setdefault((t.dtype, t.device), []).append(t)
    return groups


def average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the ranks, in one all-reduce per dtype/device.

    A parameter without a gradient on some ranks counts as a zero gradient there (what DDP does for an unused
    parameter); one without a gradient on every rank keeps ``grad=None``, so Adam skips it as in one process.

    Args:
        params: the same list (shapes, order) on every rank: one optimiser's parameters.
    """
    if not _dist_ready():
        return
    world = dist.get_world_size()
    for (dtype, device), group in _groups(list(params)).items():
        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=dtype, device=device)
                 for p in group]
        present = torch.tensor([p.grad is not None for p in group], dtype=dtype, device=device)
        flat = torch.cat([*grads, present])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat[:-len(group)].div_(world)
        offset = 0
        for p, count in zip(group, flat[-len(group):].tolist()):
            n = p.numel()
            if count > 0:
                value = flat[offset:offset + n].view_as(p)
                if p.grad is None:
                    p.grad = value.clone()
                else:
                    p.grad.copy_(value)
            offset += n


class GANDDPStrategy(DDPStrategy):
    """DDP without the ``DistributedDataParallel`` wrapper: weights broadcast once, each optimiser's gradients
    averaged over the ranks right before its step (see the module docstring).

    Takes the arguments of Lightning's ``DDPStrategy`` (``process_group_backend``, ``timeout``, ...); DDP wrapper
    options (``find_unused_parameters``, ``static_graph``, communication hooks) do not apply and are refused.
    """

    strategy_name = "ddp_gan"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        wrapper_options = sorted(k for k in kwargs if k in ("find_unused_parameters", "static_graph",
                                                             "gradient_as_bucket_view", "bucket_cap_mb"))
        if kwargs.get("ddp_comm_hook") is not None:
            wrapper_options.append("ddp_comm_hook")
        if wrapper_options:
            raise ValueError(f"ddp_gan does not wrap the module in DistributedDataParallel: {wrapper_options} do not "
                             "apply (use strategy='ddp_find_unused_parameters_true' for the wrapper)")
        super().__init__(*args, **kwargs)

    def configure_ddp(self) -> None:
        """Keep the LightningModule unwrapped and give every rank rank 0's parameters and buffers."""
        module = self.lightning_module
        assert module is not None
        broadcast_tensors([*module.parameters(), *module.buffers()])

    def optimizer_step(self, optimizer: Any, closure: Callable[[], Any], model: Any = None, **kwargs: Any) -> Any:
        """Average the optimiser's gradients over the ranks, then step it."""
        inner = getattr(optimizer, "_optimizer", optimizer)
        self.sync_gradients([p for g in inner.param_groups for p in g["params"]])
        return super().optimizer_step(optimizer, closure, model, **kwargs)

    def sync_gradients(self, params: list[nn.Parameter]) -> None:
        """Average ``params``' gradients over the ranks (a test's negative control overrides this with a no-op).

        Args:
            params: one optimiser's parameters.
        """
        average_gradients(params)


def strategy_problem(strategy: Any, *, accelerator: str, sync_batchnorm: bool) -> str | None:
    """Why ``strategy`` cannot train this project's GANs (None when it can).

    Args:
        strategy: the Trainer's strategy object.
        accelerator: ``"cpu"``, ``"cuda"``, ...
        sync_batchnorm: the Trainer's ``sync_batchnorm`` flag.
    """
    use = "use --trainer.strategy=ddp_gan (or ddp_find_unused_parameters_true)"
    if sync_batchnorm and accelerator == "cpu":
        return ("sync_batchnorm needs GPUs (NCCL); on CPU each rank normalises its own chunks and rank 0's running "
                "statistics are broadcast before evaluation and checkpoints: drop --trainer.sync_batchnorm")
    if isinstance(strategy, (SingleDeviceStrategy, GANDDPStrategy)):
        return None
    if isinstance(strategy, DDPStrategy):
        kwargs = getattr(strategy, "_ddp_kwargs", {}) or {}
        if kwargs.get("static_graph"):
            return (f"DDP with static_graph fails for GANs (the generator and discriminator passes use different "
                    f"parameters, lazy R1/path-length steps differ again): {use}")
        if not kwargs.get("find_unused_parameters"):
            return (f"strategy {type(strategy).__name__} without find_unused_parameters fails for GANs (each pass "
                    f"leaves the other network's parameters unused under toggle_optimizer): {use}")
        return None
    return f"strategy {type(strategy).__name__} is not supported for the GAN modules: {use}"


def check_strategy(trainer: Any) -> None:
    """Refuse a Trainer whose strategy is known to break GAN training (same result on every rank: no hang).

    Args:
        trainer: the Lightning Trainer about to train.

    Raises:
        ValueError: naming the strategy and the ones to use.
    """
    connector = getattr(trainer, "_accelerator_connector", None)
    accelerator = getattr(getattr(trainer, "strategy", None), "root_device", torch.device("cpu")).type
    problem = strategy_problem(trainer.strategy, accelerator=accelerator,
                               sync_batchnorm=bool(getattr(connector, "sync_batchnorm", False)))
    if problem:
        raise ValueError(problem)


if "ddp_gan" not in StrategyRegistry:
    StrategyRegistry.register("ddp_gan", GANDDPStrategy, description="DDP for GANs: weights broadcast once, each "
                              "optimiser's gradients averaged before its step", start_method="popen")

__all__ = ["GANDDPStrategy", "SAFE_STRATEGIES", "average_gradients", "broadcast_tensors", "check_strategy",
           "strategy_problem"]
