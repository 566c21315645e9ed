"""The CrossEarth Processing provider and its algorithms.

To add an algorithm: write one module with a base.CrossEarthAlgorithm subclass (use
engine_run.run_engine_for_feedback to run an engine command with progress and cancel), import
it here and add its class to ALGORITHMS; the provider registers every class listed.
"""

from __future__ import annotations

from .convert_checkpoint import ConvertCheckpointAlgorithm
from .download_model import DownloadModelAlgorithm
from .fine_tune import FineTuneAlgorithm
from .segment_raster import SegmentRasterAlgorithm

ALGORITHMS = [
    SegmentRasterAlgorithm,
    ConvertCheckpointAlgorithm,
    DownloadModelAlgorithm,
    FineTuneAlgorithm,
]
