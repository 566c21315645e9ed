"""`make demo`: segment the bundled sample raster with the bundled default model."""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.errors import CrossEarthError  # noqa: E402
from engine.packages import default_model_name, find_package, list_packages  # noqa: E402
from engine.pipeline import SegmentOptions, segment  # noqa: E402

SAMPLE = REPO / "resources" / "samples" / "landsat7_olinda_6band.tif"
OUT = REPO / "demo-output"


def main() -> int:
    packages, _ = list_packages()
    print(f"installed model packages: {', '.join(p.card.name for p in packages) or 'none'}")
    if default_model_name() is None:
        print(
            "No bundled default model is installed yet (resources/models/DEFAULT), so there is\n"
            "nothing to run the sample with. Segment your own raster with a model package:\n"
            "  .venv/bin/crossearth segment INPUT.tif OUTPUT.tif --model PACKAGE_FOLDER"
        )
        return 0
    package = find_package(None)
    OUT.mkdir(exist_ok=True)
    output = OUT / f"{SAMPLE.stem}.{package.card.name}.tif"
    started = time.perf_counter()
    try:
        result = segment(
            SAMPLE,
            output,
            package,
            SegmentOptions(confidence=output.with_suffix(".confidence.tif")),
        )
    except CrossEarthError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 2
    print(
        f"segmented {SAMPLE.name} with {package.card.name} in "
        f"{time.perf_counter() - started:.1f} s -> {result.output}"
    )
    for name, count in result.class_pixels.items():
        print(f"  {name:<24} {count:>10,d} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
