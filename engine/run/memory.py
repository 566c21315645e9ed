"""What a run will hold in memory, checked against what the machine has before it starts."""

from __future__ import annotations

import os

from engine.error_codes import MEMORY
from engine.errors import ResourceError

# Activations of the network beside its inputs and outputs: a generous multiple, so only
# requests that cannot possibly fit are refused.
_NETWORK_FACTOR = 4


def available_memory_bytes() -> int | None:
    """Memory available to new allocations (Linux MemAvailable; else total physical)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return None


def segmentation_bytes(
    *, tile: int, batch: int, bands: int, classes: int, width: int, input_scale: float = 1
) -> int:
    """Host memory of a segmentation run: the strip of blended scores (one tile tall, raster
    wide), the block of source tiles being read (raster_input.READ_BLOCK_TILES tiles wide, read
    ahead by the prefetcher), and a batch of tiles in, at the model's scale, and scores out."""
    from engine.raster.raster_input import READ_BLOCK_MIN_PX, READ_BLOCK_TILES

    strip = (4 * classes + 4 + 1) * tile * width
    block = 2 * (4 * bands + 1) * tile * min(width, max(READ_BLOCK_TILES * tile, READ_BLOCK_MIN_PX))
    strip += block
    model_side = round(tile * input_scale)  # the model's tile: a scaled tile may be fractional
    batch_in = 4 * batch * bands * model_side * model_side
    batch_out = 4 * batch * classes * tile * tile
    return strip + _NETWORK_FACTOR * (batch_in + batch_out)


def check_fits(needed: int, what: str, fix: str, options: tuple[str, ...] = ()) -> None:
    """Refuses a request that needs more memory than the machine has available; `fix` says
    how in words, `options` names the options that would lower the need."""
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise ResourceError(
            f"{what} needs about {needed / 2**30:.1f} GiB of memory but {available / 2**30:.1f} "
            f"GiB are available; {fix}",
            code=MEMORY,
            what=what,
            needed_gib=round(needed / 2**30, 1),
            available_gib=round(available / 2**30, 1),
            options=list(options),
        )
