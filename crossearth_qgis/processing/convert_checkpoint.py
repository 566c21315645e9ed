"""crossearth:convertcheckpoint: an official CrossEarth .pth checkpoint -> a model package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterString,
)

from ..worker.client import EngineOutcome
from ..worker.requests import WEIGHTS_DTYPES, ConvertRequest
from .base import CrossEarthAlgorithm, Feedback, Parameters


class ConvertCheckpointAlgorithm(CrossEarthAlgorithm):
    CHECKPOINT = "CHECKPOINT"
    PRESET = "PRESET"
    MMSEG_CONFIG = "MMSEG_CONFIG"
    BACKBONE = "BACKBONE"
    NAME = "NAME"
    CLASSES = "CLASSES"
    DTYPE = "DTYPE"
    OUTPUT = "OUTPUT"
    MODEL_NAME = "MODEL_NAME"

    ALGORITHM_ID = "convertcheckpoint"
    DISPLAY_NAME = "Convert official checkpoint"
    HELP_TEXT = (
        "Converts an official CrossEarth checkpoint (.pth, mmseg layout) into a model "
        "package folder (model.json + weights.safetensors) that 'Segment raster' and the "
        "dock can use. Give either the preset of the released checkpoint (for example "
        "potsdam-r-source, whu-building-a2s, casid-sub-source; the dock's 'Add model' "
        "dialog lists them all) or the mmseg config it was trained with. Rein+head "
        "checkpoints also need the frozen DINOv2 backbone file (dinov2_converted.pth). "
        "Put the package in the user models folder to find it by name."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(
            QgsProcessingParameterFile(
                self.CHECKPOINT, "Official checkpoint (.pth)", extension="pth"
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.PRESET, "Released checkpoint preset (e.g. potsdam-r-source)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.MMSEG_CONFIG, "or its mmseg config (.py)", extension="py", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.BACKBONE,
                "Frozen DINOv2 backbone (for rein+head checkpoints)",
                extension="pth",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.NAME, "Model name (empty = the folder's name)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.CLASSES,
                "Class names, comma-separated (with an mmseg config that has none)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.DTYPE, "Weight precision", WEIGHTS_DTYPES, defaultValue=0
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT, "Model package folder")
        )
        self.addOutput(QgsProcessingOutputString(self.MODEL_NAME, "Model name"))

    def prepare(
        self, parameters: Parameters, context: QgsProcessingContext, feedback: Feedback
    ) -> ConvertRequest:
        preset = self.parameterAsString(parameters, self.PRESET, context).strip() or None
        config = self.parameterAsFile(parameters, self.MMSEG_CONFIG, context).strip() or None
        if (preset is None) == (config is None):
            raise QgsProcessingException(
                "Give either the checkpoint's preset or its mmseg config file (one of the two)."
            )
        output = Path(self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        # Processing may create the destination folder up front; the engine wants to create it.
        if output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        classes = self.parameterAsString(parameters, self.CLASSES, context).strip()
        request = ConvertRequest(
            checkpoint=self.parameterAsFile(parameters, self.CHECKPOINT, context),
            output=str(output),
            preset=preset,
            mmseg_config=config,
            backbone=self.parameterAsFile(parameters, self.BACKBONE, context).strip() or None,
            name=self.parameterAsString(parameters, self.NAME, context).strip() or None,
            classes=[c.strip() for c in classes.split(",")] if classes else None,
            dtype=WEIGHTS_DTYPES[self.parameterAsEnum(parameters, self.DTYPE, context)],
            # A destination parameter comes with QGIS's overwrite confirmation; the engine
            # still replaces only a model package it wrote itself.
            overwrite=True,
        )
        feedback.setProgressText(f"converting {Path(request.checkpoint).name}")
        return request

    def results(
        self,
        job: ConvertRequest,
        outcome: EngineOutcome,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        output = Path(job.output)
        for warning in outcome.warnings:
            feedback.pushWarning(warning)
        for line in outcome.stdout:
            if not line.startswith("warning: "):
                feedback.pushInfo(line)
        card = json.loads((output / "model.json").read_text(encoding="utf-8"))
        return {self.OUTPUT: str(output), self.MODEL_NAME: card.get("name", output.name)}
