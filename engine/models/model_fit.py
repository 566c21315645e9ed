"""Which models can take a raster: its bands, data type and pixel size against each model's.

One owner for the advice a user gets when the chosen model does not fit the imagery: the CLI
prints it (`crossearth fit`, and in segment's band error), the plugin shows the same text in
the dock and in Processing's error (it runs `fit --json` or reads the error's fields). Installed
models that run here come first, then those that need another set-up, then official downloads;
when nothing fits, the advice says what would (a band mapping, or fine-tuning).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Beyond this ratio between the raster's and the model's pixel size, a model sees objects at a
# scale it never learned; the engine still resamples, but it is not a fit worth suggesting.
MAX_GSD_RATIO = 4.0
FULL_ENVIRONMENT = "the Full engine environment (PyTorch)"
# A fine-tuned model is the answer when no model takes these bands (CLI and Processing names).
FINE_TUNE_HINT = (
    "fine-tune a model on labels of this area with these bands ('crossearth train', or "
    "Processing > CrossEarth > Fine-tune model)"
)
_UNSUPPORTED_DTYPES = ("complex",)
_BRACKETS = re.compile(r"\s*\([^)]*\)")


@dataclass(frozen=True)
class RasterFacts:
    """What a raster offers a model: the names of each band (its description and colour, lower
    case; none when the band says nothing), the data type and the pixel size in metres (None:
    unknown)."""

    name: str
    band_names: tuple[tuple[str | None, ...], ...]
    dtype: str
    gsd_m: float | None

    @classmethod
    def of_dataset(cls, dataset: Any, name: str) -> RasterFacts:
        """The facts of an open rasterio dataset."""
        from engine.raster.raster_input import band_labels
        from engine.raster.resolution import raster_gsd_m

        labels = tuple(band_labels(dataset, index) for index in range(dataset.count))
        return cls(name, labels, str(dataset.dtypes[0]), raster_gsd_m(dataset))

    @property
    def band_count(self) -> int:
        """How many bands the raster has."""
        return len(self.band_names)


@dataclass(frozen=True)
class Candidate:
    """A model that might take the raster: installed (`path`) or an official download."""

    name: str
    bands: tuple[str, ...]
    gsd_m: float | None
    path: str | None = None  # the installed package; None for a download
    size_text: str = ""  # the download's size ("1.68 GB")
    license: str = ""
    requires: str | None = None  # the set-up it needs beyond this environment; None: runs here


@dataclass(frozen=True)
class Fit:
    """A candidate that takes the raster, with the band numbers it reads them from."""

    candidate: Candidate
    bands: tuple[int, ...]
    by_name: bool  # the bands were matched by their names (else taken in order: worth a check)

    def bands_text(self) -> str:
        """Which bands feed the model: "bands 3,2,1 as red, green, blue"."""
        numbers = ",".join(map(str, self.bands))
        how = "" if self.by_name else ", check that they are"
        return f"bands {numbers}{how} as {', '.join(self.candidate.bands)}"

    def to_json(self) -> dict[str, Any]:
        """The fit as plain JSON data (`fit --json`, the plugin's buttons)."""
        c = self.candidate
        return {
            "name": c.name,
            "path": c.path,
            "bands": list(self.bands),
            "by_name": self.by_name,
            "model_bands": list(c.bands),
            "gsd_m": c.gsd_m,
            "size": c.size_text,
            "license": c.license,
            "requires": c.requires,
            "text": describe_fit(self),
        }


@dataclass(frozen=True)
class FitReport:
    """The chosen model's problems with the raster (empty: it fits) and the models that fit."""

    raster: RasterFacts
    model: str | None
    problems: tuple[str, ...]
    installed: tuple[Fit, ...] = ()
    downloads: tuple[Fit, ...] = ()
    would: tuple[str, ...] = field(default=())

    @property
    def fits(self) -> bool:
        """Whether the chosen model takes the raster."""
        return not self.problems

    def text(self) -> str:
        """The advice as one line (the CLI prints it; the plugin shows it as it is)."""
        return advice_text(self)

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON data, its one-line text included."""
        return {
            "raster": self.raster.name,
            "model": self.model,
            "fits": self.fits,
            "problems": list(self.problems),
            "installed": [f.to_json() for f in self.installed],
            "downloads": [f.to_json() for f in self.downloads],
            "would": list(self.would),
            "text": self.text(),
        }


def band_mapping(facts: RasterFacts, wanted: Sequence[str]) -> tuple[tuple[int, ...], bool] | None:
    """The raster's bands for the model's inputs, as the engine picks them (engine/raster_input
    resolve_bands): by name, else (bands without names) the first ones in order, a guess to
    confirm; None when the raster has too few bands or names them all without the model's."""
    if facts.band_count < len(wanted):
        return None
    from engine.raster.raster_input import band_positions

    positions = band_positions(facts.band_names)
    by_name = [positions.get(name.lower()) for name in wanted]
    if all(b is not None for b in by_name) and len(set(by_name)) == len(by_name):
        return tuple(int(b) for b in by_name if b is not None), True
    if all(any(names) for names in facts.band_names):
        return None  # every band is named, and the model's are not all among them
    return tuple(range(1, len(wanted) + 1)), False


def gsd_ratio(raster_gsd: float | None, model_gsd: float | None) -> float | None:
    """How many times the pixel sizes differ (>= 1), None when either is unknown."""
    if not raster_gsd or not model_gsd:
        return None
    return max(raster_gsd / model_gsd, model_gsd / raster_gsd)


def problems_with(facts: RasterFacts, bands: Sequence[str], gsd_m: float | None) -> list[str]:
    """Why a model with these bands and this GSD cannot take the raster (empty: it can)."""
    problems = []
    if facts.dtype.startswith(_UNSUPPORTED_DTYPES):
        problems.append(f"its {facts.dtype} values are not image data a model reads")
    if facts.band_count < len(bands):
        problems.append(
            f"it has {facts.band_count} band(s) and the model needs {len(bands)} "
            f"({', '.join(bands)})"
        )
    ratio = gsd_ratio(facts.gsd_m, gsd_m)
    if ratio is not None and ratio > MAX_GSD_RATIO and facts.gsd_m is not None:
        how = "finer" if facts.gsd_m < (gsd_m or 0) else "coarser"
        problems.append(
            f"its {_metres(facts.gsd_m)} pixels are {ratio:.0f}x {how} than the "
            f"{_metres(gsd_m)} the model was trained at"
        )
    return problems


def assess(
    facts: RasterFacts, chosen: Candidate | None, candidates: Iterable[Candidate]
) -> FitReport:
    """The report for the chosen model (None: only which models fit) among the candidates."""
    problems = tuple(problems_with(facts, chosen.bands, chosen.gsd_m)) if chosen else ()
    fits: list[Fit] = []
    for candidate in candidates:
        if chosen is not None and candidate.name == chosen.name:
            continue
        mapping = band_mapping(facts, candidate.bands)
        if mapping is None or problems_with(facts, candidate.bands, candidate.gsd_m):
            continue
        fits.append(Fit(candidate, *mapping))

    def order(fit: Fit) -> tuple[bool, bool, float]:
        ratio = gsd_ratio(facts.gsd_m, fit.candidate.gsd_m)
        return (fit.candidate.requires is not None, not fit.by_name, ratio or MAX_GSD_RATIO)

    installed = tuple(sorted((f for f in fits if f.candidate.path), key=order))
    downloads = tuple(sorted((f for f in fits if not f.candidate.path), key=order))
    would: tuple[str, ...] = ()
    if not installed and not downloads:
        would = _what_would(facts, chosen)
    return FitReport(facts, chosen.name if chosen else None, problems, installed, downloads, would)


def _what_would(facts: RasterFacts, chosen: Candidate | None) -> tuple[str, ...]:
    """With no model that fits: a band mapping for the chosen model, where one is possible, and
    fine-tuning."""
    lines = []
    if chosen is not None:
        mapping = band_mapping(facts, chosen.bands)
        if mapping is not None and not mapping[1]:
            numbers = ",".join(map(str, mapping[0]))
            lines.append(f"use bands {numbers} as {', '.join(chosen.bands)} (Bands: {numbers})")
    lines.append(FINE_TUNE_HINT)
    return tuple(lines)


def _requirements(fit: Fit) -> list[str]:
    """What taking this model asks of the user: the download's licence, a set-up."""
    c = fit.candidate
    parts = []
    if not c.path and c.license:
        # the licence's names without their sources in brackets: "code MIT; weights MIT"
        parts.append("licence " + _BRACKETS.sub("", c.license))
    if c.requires:
        parts.append(f"needs {c.requires}")
    return parts


def describe_fit(fit: Fit, shared: Sequence[str] = ()) -> str:
    """One model that fits, with what it needs beyond `shared` (said once for a list):
    "whu-building-a2s (download ~1.68 GB; trained at 0.3 m; bands 1,2,3 as red, green, blue)"."""
    c = fit.candidate
    parts = ["installed" if c.path else f"download {c.size_text}"]
    parts += [p for p in _requirements(fit) if p not in shared]
    if c.gsd_m:
        parts.append(f"trained at {_metres(c.gsd_m)}")
    parts.append(fit.bands_text())
    return f"{c.name} ({'; '.join(parts)})"


def _listed(title: str, fits: Sequence[Fit], limit: int) -> str:
    """A sentence naming up to `limit` fits; what they all need is said once, in the title."""
    shown = fits[:limit]
    shared = [p for p in _requirements(shown[0]) if all(p in _requirements(f) for f in shown)]
    head = f"{title} ({'; '.join(shared)})" if shared else title
    names = "; ".join(describe_fit(f, shared) for f in shown)
    more = len(fits) - len(shown)
    extra = f"; and {more} more" if more > 0 else ""
    return f"{head}: {names}{extra}."


def advice_text(report: FitReport, limit: int = 3) -> str:
    """The report as one line: the problem, then the models that fit (at most `limit` of each
    kind), or what would."""
    sentences = []
    if report.problems:
        model = f"the model '{report.model}'" if report.model else "the model"
        sentences.append(
            f"'{report.raster.name}' does not fit {model}: {'; '.join(report.problems)}."
        )
    if report.installed:
        sentences.append(_listed("Installed models that take it", report.installed, limit))
    if report.downloads:
        sentences.append(
            _listed("Official models to download that take it", report.downloads, limit)
        )
    if report.would:
        sentences.append(f"No model here takes it; what would: {'; or '.join(report.would)}.")
    return " ".join(sentences)


def _metres(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "an unknown pixel size"
    return f"{value:g} m"


def runs_here(card: Any) -> str | None:
    """The set-up a model package needs beyond this environment (None: it runs here): an ONNX
    graph runs on an installed ONNX runtime, anything else needs PyTorch."""
    from engine.run.runtime_registry import ONNX_RUNTIMES
    from engine.run.runtimes import installed

    if installed("torch"):
        return None
    if card.onnx is not None and any(installed(r) for r in ONNX_RUNTIMES):
        return None
    return FULL_ENVIRONMENT


def package_candidate(package: Any) -> Candidate:
    """An installed package as a candidate, with the set-up it needs here."""
    card = package.card
    return Candidate(
        card.name,
        tuple(card.input.bands),
        card.gsd_m,
        str(package.path),
        "",
        card.license,
        runs_here(card),
    )


def local_candidates() -> list[Candidate]:
    """The installed packages, then the official models not installed that can be downloaded
    (a download is converted with PyTorch, and runs on it)."""
    from engine.models.catalog import format_size, load_catalog
    from engine.models.packages import list_packages
    from engine.run.runtimes import installed

    packages, _ = list_packages()
    candidates = [package_candidate(p) for p in packages]
    known = {c.name for c in candidates} | {p.path.name for p in packages}
    requires = None if installed("torch") and installed("huggingface_hub") else FULL_ENVIRONMENT
    for entry in load_catalog():
        if entry.downloadable and entry.name not in known:
            size = format_size(entry.download_size, entry.size_exact)
            candidates.append(
                Candidate(
                    entry.name,
                    tuple(entry.preset.bands),
                    entry.preset.gsd_m,
                    None,
                    size,
                    entry.license,
                    requires,
                )
            )
    return candidates


def report_for(facts: RasterFacts, model: str | None) -> FitReport:
    """The report for a raster and an installed model or package path (None: no model chosen,
    only which ones fit)."""
    from engine.models.packages import find_package

    chosen = package_candidate(find_package(model)) if model is not None else None
    return assess(facts, chosen, local_candidates())


def raster_facts(path: Any) -> RasterFacts:
    """The facts of the raster at `path`, named as messages name files."""
    from engine.files import describe_path
    from engine.raster.raster_input import open_raster

    with open_raster(path) as dataset:
        return RasterFacts.of_dataset(dataset, describe_path(path))


def with_advice(error: Any, input_path: Any, model: str | None) -> Any:
    """A band error of segment's, with the models that take the raster appended (the same
    advice `crossearth fit` gives), and the report in its fields as `advice`."""
    from engine.errors import CrossEarthError, InputError
    from engine.models.packages import find_package

    try:
        chosen = str(find_package(model).path)  # None: the default model, which segment used
        report = report_for(raster_facts(input_path), chosen)
    except CrossEarthError:
        return error  # the advice is extra: a catalog problem must not hide the real one
    others = FitReport(report.raster, None, (), report.installed, report.downloads, report.would)
    return InputError(
        f"{error}. {others.text()}", code=error.code, **error.fields, advice=report.to_json()
    )
