"""Writing a plan's outputs: decided rows streamed into the class (and confidence) GeoTIFFs,
then finished (sieve, overviews), published, and the polygons made; single-process and sharded
runs end with the same step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import CrossEarthError, SegmentationCancelled
from engine.models.model_card import ModelCard
from engine.raster.postprocess import sieve
from engine.raster.raster_output import (
    StreamingGeoTiff,
    class_raster,
    confidence_raster,
)
from engine.raster.vectorize import polygonize
from engine.run.options import ProgressCallback
from engine.run.output_paths import RunOutputs
from engine.run.plan import Plan
from engine.run.row_stream import ClassTally, DecidedRows

log = logging.getLogger(__name__)


class OutputWriter(ClassTally):
    """Streams decided rows into the run's class (and confidence) GeoTIFFs, counting classes;
    `finish` completes the files, `publish` renames them into place, `discard` removes them."""

    def __init__(
        self,
        card: ModelCard,
        outputs: RunOutputs,
        profile: dict[str, Any],
        tags: dict[str, str],
        confidence_dtype: str,
    ) -> None:
        super().__init__(card.num_classes)
        self.confidence_dtype = confidence_dtype
        self.files: list[StreamingGeoTiff] = []
        try:
            self.classes = class_raster(
                outputs.classes, profile, card.class_names, [c.color for c in card.classes], tags
            )
            self.files.append(self.classes)
            self.confidence = None
            if outputs.confidence is not None:
                self.confidence = confidence_raster(
                    outputs.confidence, profile, confidence_dtype, tags
                )
                self.files.append(self.confidence)
        except BaseException:
            self.discard()
            raise

    def write(self, rows: DecidedRows) -> None:
        """Appends the next decided rows to the files and adds them to the class counts."""
        self.tally(rows)
        self.classes.write_rows(rows.classes)
        if self.confidence is not None:
            assert rows.confidence is not None
            self.confidence.write_rows(rows.confidence)

    def finish_classes(self, sieve_pixels: int = 0, keep_classes: tuple[int, ...] = ()) -> None:
        """Completes the class raster; a minimum region size sieves it first (and the class
        counts follow it)."""
        postprocess = None
        if sieve_pixels > 1:

            def postprocess(path: Path) -> None:
                self.counts = sieve(path, sieve_pixels, list(keep_classes), self.num_classes)

        self.classes.finish(postprocess)

    def publish_classes(self) -> list[Path]:
        """Renames the finished class raster (and its .aux.xml) into place; returns both."""
        published = self.classes.publish()
        aux = Path(f"{published}.aux.xml")
        return [published, aux] if aux.exists() else [published]

    def complete_confidence(self) -> str | None:
        """Finishes and publishes the confidence raster, if the run makes one. A failure is
        returned as its one line and the confidence file removed: the class raster, already
        in place, stands."""
        if self.confidence is None:
            return None
        try:
            self.confidence.finish()
            self.confidence.publish()
        except CrossEarthError as exc:
            self.confidence.discard()
            return str(exc)
        return None

    def discard(self) -> None:
        """Removes the unfinished files; nothing that existed before the run is touched."""
        for file in self.files:
            file.discard()


def complete_outputs(
    writer: OutputWriter,
    plan: Plan,
    report: ProgressCallback,
    is_cancelled: Callable[[], bool],
) -> dict[str, str]:
    """Finishes the written rows into the run's outputs. The class raster is finished (sieve,
    overviews) and published first; the confidence raster and the polygons follow, and a
    failure of either (a full disk, a layer that cannot be written) is returned as one line
    per output ({"polygons": "..."}): a complete class raster is never discarded for them. A
    cancel removes every output the run published. Single-process and sharded runs end with
    this same step."""
    report(0.96, "building overviews")
    writer.finish_classes(plan.sieve_pixels, plan.keep_classes)
    if is_cancelled():
        raise SegmentationCancelled()
    published = writer.publish_classes()
    failed: dict[str, str] = {}
    try:
        problem = writer.complete_confidence()
        if problem is not None:
            failed["confidence"] = problem
        elif plan.outputs.confidence is not None:
            published.append(plan.outputs.confidence)
        if plan.outputs.polygons is not None:
            report(0.98, "vectorizing classes")
            if is_cancelled():
                raise SegmentationCancelled()
            try:
                polygonize(
                    plan.outputs.classes,
                    plan.outputs.polygons,
                    plan.card.class_names,
                    simplify_m=plan.options.simplify_m,
                )
            except CrossEarthError as exc:
                failed["polygons"] = str(exc)
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        raise
    for name, problem in failed.items():
        log.info("%s not written: %s", name, problem)  # the caller reports it
    return failed
