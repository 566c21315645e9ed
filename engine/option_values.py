"""Option values named once for the engine, its command line and training: the dtypes model
weights and confidence rasters may have, and band lists as people write them ("3,2,1"). Light
on purpose (no numpy, torch or pydantic): the CLI builds its parser from them before any heavy
import."""

from __future__ import annotations

from engine.error_codes import INPUT_BANDS
from engine.errors import InputError

# What a package's weights.safetensors may hold (convert --dtype, train --weights-dtype).
WEIGHTS_DTYPES = ("float32", "float16", "bfloat16")
# A confidence raster's dtypes and the nodata value each marks unclassified pixels with.
CONFIDENCE_NODATA = {"float32": -1.0, "uint8": 255}


def parse_band_numbers(text: str) -> list[int]:
    """'3,2,1' -> [3, 2, 1]: 1-based source band numbers in the model's order (empty parts
    between commas are ignored). A one-line InputError names the text and an example."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(
            f"'{text}' is not a comma-separated list of band numbers (e.g. 3,2,1)",
            code=INPUT_BANDS,
            option="bands",
            value=text,
        ) from None
    if not values:
        raise InputError(
            "give at least one band number (e.g. 3,2,1)",
            code=INPUT_BANDS,
            option="bands",
            value=text,
        )
    return values
