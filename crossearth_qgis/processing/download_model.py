"""crossearth:downloadmodel: an official CrossEarth model from Hugging Face, installed."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFolder,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterString,
)

from ..catalog_events import catalog_events
from ..worker.client import EngineOutcome
from ..worker.requests import DownloadRequest
from .base import CrossEarthAlgorithm, Feedback, Parameters


class DownloadModelAlgorithm(CrossEarthAlgorithm):
    MODEL = "MODEL"
    KEEP_CHECKPOINT = "KEEP_CHECKPOINT"
    OVERWRITE = "OVERWRITE"
    OUTPUT = "OUTPUT"
    MODEL_NAME = "MODEL_NAME"

    ALGORITHM_ID = "downloadmodel"
    DISPLAY_NAME = "Download model"
    HELP_TEXT = (
        "Downloads a released CrossEarth checkpoint from Hugging Face (Cusyoung/CrossEarth) "
        "and installs it as a model package in the user models folder, where 'Segment "
        "raster' and the dock find it by name: for example potsdam-r-source (ISPRS, RGB, "
        "5 cm), whu-building-a2s (buildings), d2m-rein (roads), casid-sub-source (land "
        "cover). The dock's model list shows every one with its classes and size (about "
        "1.7 GB each), as does 'crossearth models --available'. The free disk space is "
        "checked first; the download is resumed after a broken connection and checked "
        "against its published SHA-256. "
        "HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN and proxy settings apply."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(
            QgsProcessingParameterString(self.MODEL, "Model name (e.g. potsdam-r-source)")
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.KEEP_CHECKPOINT,
                "Keep the downloaded checkpoint (.pth) in the Hugging Face cache",
                defaultValue=False,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.OVERWRITE,
                "Replace the installed model of that name",
                defaultValue=False,
            )
        )
        self.addOutput(QgsProcessingOutputFolder(self.OUTPUT, "Model package folder"))
        self.addOutput(QgsProcessingOutputString(self.MODEL_NAME, "Model name"))

    def prepare(
        self, parameters: Parameters, context: QgsProcessingContext, feedback: Feedback
    ) -> DownloadRequest:
        name = self.parameterAsString(parameters, self.MODEL, context).strip()
        if not name:
            raise QgsProcessingException("Give the name of the model to download.")
        feedback.setProgressText(f"downloading {name}")
        return DownloadRequest(
            name=name,
            keep_checkpoint=self.parameterAsBoolean(parameters, self.KEEP_CHECKPOINT, context),
            overwrite=self.parameterAsBoolean(parameters, self.OVERWRITE, context),
        )

    def results(
        self,
        job: DownloadRequest,
        outcome: EngineOutcome,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        done = outcome.done or {}
        for warning in outcome.warnings:
            feedback.pushWarning(warning)
        package = str(done.get("package", ""))
        for path in done.get("kept", []):
            feedback.pushInfo(f"kept in the Hugging Face cache: {path}")
        feedback.pushInfo(f"installed {job.name} in {package}")
        catalog_events.package_added.emit(package)
        return {self.OUTPUT: package, self.MODEL_NAME: job.name}
