"""The layers of the house: engine <- training, and the QGIS plugin apart from both.

The engine names nothing in training (training plugs its commands in through the entry-point
group `crossearth.commands`) and nothing of the plugin; the plugin imports neither torch nor the
engine nor training, at any level: it talks to the engine worker through the command line.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import. The engine's environment is made of PyPI
# wheels only: rasterio and pyogrio bring GDAL, so GDAL's Python bindings (osgeo) are never
# needed there (the plugin, inside QGIS's own Python, may use them).
FORBIDDEN = {
    "engine": {"training", "crossearth_qgis", "qgis", "PyQt5", "PyQt6", "osgeo"},
    "training": {"crossearth_qgis", "qgis", "PyQt5", "PyQt6", "osgeo"},
    "crossearth_qgis": {"torch", "engine", "training"},
}


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, wherever it stands (inside
    functions too), relative imports resolved, and importlib.import_module/__import__ calls
    with a literal name."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            name = getattr(node.args[0], "value", None)
            literal = isinstance(node.args[0], ast.Constant) and isinstance(name, str)
            if called in ("import_module", "__import__") and literal and name[0] != ".":
                found.append((node.lineno, name))
    return found


def violations(package: str) -> list[str]:
    forbidden = FORBIDDEN[package]
    problems = []
    for path in sorted((REPO / package).rglob("*.py")):
        relative = path.relative_to(REPO)
        module = ".".join(relative.with_suffix("").parts)
        is_package = path.name == "__init__.py"
        if is_package:
            module = module.removesuffix(".__init__")
        source = path.read_text(encoding="utf-8")
        for line, name in imported_modules(source, module, is_package):
            if name.split(".")[0] in forbidden:
                problems.append(f"{relative}:{line} imports {name}")
    return problems


def test_engine_imports_neither_training_nor_the_plugin():
    assert violations("engine") == []


def test_plugin_imports_neither_torch_nor_engine_nor_training():
    assert violations("crossearth_qgis") == []


def test_training_imports_neither_the_plugin_nor_gdal_bindings():
    assert violations("training") == []


def test_the_import_check_finds_imports_anywhere():
    source = textwrap.dedent(
        """
        import os
        from . import files
        from .. import training
        def later():
            import torch.nn
            from training.cli import register_train
            importlib.import_module("engine.cli")
        """
    )
    names = [name for _, name in imported_modules(source, "engine.sub.module", False)]
    assert names == ["os", "engine.sub", "engine", "torch.nn", "training.cli", "engine.cli"]
    assert [n for _, n in imported_modules("from ..x import y", "engine.cli", False)] == ["x"]


# --- an engine without training --------------------------------------------------------------

# Runs the CLI with `training` unimportable, as in an engine-only install.
WITHOUT_TRAINING = textwrap.dedent(
    """
    import sys

    class NoTraining:
        def find_spec(self, name, path=None, target=None):
            if name == "training" or name.startswith("training."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTraining())
    from engine.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def run_cli(args: list[str], tmp_path: Path, code: str = WITHOUT_TRAINING, pythonpath: str = ""):
    env = {**os.environ, "CROSSEARTH_MODELS_DIR": str(tmp_path / "models")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, str(REPO)) if p)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_engine_commands_run_without_training(tmp_path):
    helped = run_cli(["segment", "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "usage: crossearth segment" in helped.stdout
    listed = run_cli(["models", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert '"models"' in listed.stdout
    assert listed.stderr == ""


@pytest.mark.parametrize("args", [["train", "--config", "recipe.yaml"], ["evaluate", "--help"]])
def test_a_training_command_without_training_says_so_in_one_line(tmp_path, args):
    result = run_cli(args, tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"crossearth: the '{args[0]}' command is not available: ")
    assert "training is not installed" in lines[0]


# Runs the CLI with GDAL's Python bindings unimportable, as in the plugin's engine environment.
WITHOUT_OSGEO = textwrap.dedent(
    """
    import sys

    sys.modules["osgeo"] = None  # `import osgeo` and `from osgeo import gdal` fail
    from engine.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_every_segment_feature_runs_without_gdal_bindings(tmp_path):
    """Extent (a VRT window), the model's grid (a resampled VRT), the minimum region filter,
    confidence and polygons: rasterio, pyogrio and shapely carry them all."""
    import rasterio

    sample = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
    with rasterio.open(sample) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    extent = f"{left + 600},{bottom + 600},{right - 900},{top - 900}"
    out = tmp_path / "classes.tif"
    result = run_cli(
        ["segment", str(sample), str(out), "--device", "cpu", "--extent", extent, "--gsd", "57",
         "--output-grid", "model", "--min-region", "4", "--keep-classes", "water",
         "--confidence", str(tmp_path / "confidence.tif"),
         "--polygons", str(tmp_path / "classes.gpkg"), "--simplify", "30"],
        tmp_path,
        WITHOUT_OSGEO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with rasterio.open(out) as classes:
        assert classes.crs == crs
        assert classes.res == pytest.approx((57, 57), rel=0.02)  # the model's grid at 57 m
        assert classes.bounds.left == pytest.approx(left + 600, abs=30)
        assert classes.bounds.top == pytest.approx(top - 900, abs=30)
        values = classes.read(1)
    assert set(map(int, set(values.ravel().tolist()))) <= set(range(5)) | {255}
    assert (tmp_path / "confidence.tif").is_file()
    import pyogrio

    info = pyogrio.read_info(tmp_path / "classes.gpkg", layer="classes")
    assert info["geometry_type"] == "MultiPolygon" and info["features"] > 0
    assert "class_id" in info["fields"] and "area_m2" in info["fields"]


def test_commands_come_from_the_entry_point_group(tmp_path):
    """A third-party package plugs a command in; a broken entry point speaks only when run."""
    site = tmp_path / "site"
    info = site / "extra_commands-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-commands\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[crossearth.commands]\n"
        "hello = extra_hello:register\n"
        "broken = extra_hello:no_such_function\n"
        "segment = extra_hello:register\n"
    )
    (site / "extra_hello.py").write_text(
        textwrap.dedent(
            """
            def register(commands):
                parser = commands.add_parser("hello", help="say hello")
                parser.add_argument("who")
                return lambda args: print(f"hello {args.who}") or 0
            """
        )
    )
    plain = "import sys\nfrom engine.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    hello = run_cli(["hello", "world"], tmp_path, plain, str(site))
    assert (hello.returncode, hello.stdout, hello.stderr) == (0, "hello world\n", "")
    # The engine's own command keeps its meaning; the broken entry stays silent until asked.
    helped = run_cli(["segment", "--help"], tmp_path, plain, str(site))
    assert helped.returncode == 0 and "usage: crossearth segment" in helped.stdout
    assert helped.stderr == ""
    broken = run_cli(["broken"], tmp_path, plain, str(site))
    assert broken.returncode == 2
    assert broken.stderr.splitlines() == [
        "crossearth: the 'broken' command is not available: its entry point "
        "extra_hello:no_such_function is broken (AttributeError: module 'extra_hello' has no "
        "attribute 'no_such_function'); reinstall the package that provides it"
    ]


# --- the house's countable rules (tests/house_rules.py) ----------------------------------------


def test_the_engine_top_level_holds_few_modules():
    from tests.house_rules import MAX_ENGINE_TOP_MODULES, engine_top_modules

    assert len(engine_top_modules()) <= MAX_ENGINE_TOP_MODULES, engine_top_modules()


def test_no_module_is_over_600_lines():
    from tests.house_rules import long_files

    assert long_files() == {}


def test_few_functions_are_long_and_each_says_why():
    from tests.house_rules import MAX_LONG_FUNCTIONS, long_functions

    found = long_functions()
    assert len(found) <= MAX_LONG_FUNCTIONS, [f"{f.path}:{f.line} {f.name}" for f in found]
    assert [f for f in found if not f.why] == [], "a long function needs a comment saying why"


def test_no_import_cycle_with_function_level_imports_counted():
    from tests.house_rules import import_cycles

    assert import_cycles() == []


def test_the_rules_see_what_they_count(tmp_path):
    from tests import house_rules

    assert "cli.py" in house_rules.engine_top_modules()
    assert any(m.startswith("engine.run.") for m in house_rules.import_graph())
    graph = house_rules.import_graph()
    assert "engine.run.plan" in graph["engine.run.pipeline"]  # a top-level import
    assert "engine.run.runtimes" in graph["engine.run.pipeline"]  # inside a function too


# folder -> folders it must never import (at any level of its code): the engine's reading and
# writing of rasters know nothing of how a job runs, no library part knows the command line,
# and in the plugin the environment and the worker know nothing of the dock or Processing.
FOLDER_RULES = {
    "engine.raster": {"engine.run", "engine.commands", "engine.distributed", "engine.crossearth"},
    "engine.models": {"engine.commands", "engine.distributed"},
    "engine.crossearth": {"engine.run", "engine.raster", "engine.commands", "engine.distributed"},
    "engine.run": {"engine.commands"},
    "engine.distributed": {"engine.commands"},
    "crossearth_qgis.environment": {
        "crossearth_qgis.dock", "crossearth_qgis.processing", "crossearth_qgis.layers",
    },
    "crossearth_qgis.worker": {
        "crossearth_qgis.dock", "crossearth_qgis.processing", "crossearth_qgis.layers",
    },
    "crossearth_qgis.layers": {"crossearth_qgis.dock", "crossearth_qgis.processing"},
    "crossearth_qgis.dock": {"crossearth_qgis.processing"},
    "crossearth_qgis.processing": {"crossearth_qgis.dock"},
}  # fmt: skip


def _folder(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_folders_import_only_what_their_rules_allow():
    from tests.house_rules import import_graph

    broken = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _folder(target) in FOLDER_RULES.get(_folder(module), set())
    ]
    assert broken == []
