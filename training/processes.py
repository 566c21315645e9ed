"""Which of the run's processes this one is (one, or several under torchrun), and joining them:
the device, thread count and seed each process starts from."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from engine.run.devices import resolve_device
from training.config import TrainConfig


@dataclass
class Distributed:
    """This process's place among the run's processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder, the logs and the package."""
        return self.rank == 0


def distributed() -> Distributed:
    """This process's place as torchrun's environment gives it (none: a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def start_processes(config: TrainConfig) -> tuple[Distributed, torch.device]:
    """This process's rank and device (joining the process group under torchrun), threads and
    the seed every rank starts from."""
    dist_info = distributed()
    device = resolve_device(config.device)
    if dist_info.world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", dist_info.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    return dist_info, device
