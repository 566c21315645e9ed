#!/usr/bin/env bash
# One QGIS of scripts/matrix.sh, inside its chroot (or on the host, "host"): the repository's
# files in $WORK/crossearth, the tests' models in $WORK/fixtures. The Light engine is made the
# plugin's way with this QGIS's Python, the plugin tests run against it in this QGIS, and one
# `qgis_process` segment. Writes $WORK/result.json with the versions, times and sizes.
set -euo pipefail
release=$1
WORK=${WORK:-/work}
cd "$WORK/crossearth"
export QT_QPA_PLATFORM=offscreen PYTHONDONTWRITEBYTECODE=1
seconds() { date +%s.%N; }

qgis=$(qgis_process.bin --version 2> /dev/null | head -1)
python=$(/usr/bin/python3 -c 'import platform; print(platform.python_version())')
numpy=$(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)')
echo "matrix [$release]: $qgis, Python $python, numpy $numpy"

# 1. The Light engine environment, as "Set up engine environment" makes it (from PyPI).
rm -rf build/engine-light build/wheelhouse-light
started=$(seconds)
bash scripts/light_engine.sh /usr/bin/python3
setup_s=$(python3 -c "print(round($(seconds) - $started, 1))")
light_python=$WORK/crossearth/build/engine-light/bin/python
light_bytes=$(python3 -c "import json; print(json.load(open('build/engine-light/.crossearth-engine.json'))['size_bytes'])")

# 2. pytest beside this QGIS (system site packages: Debian's QGIS bindings), with the same
# pytest-qgis release as the development venv (5.x ran the plugin tests on 3.22, 3.40 and
# 3.44 alike). SciPy, which a test counts regions with, only where Debian has none: a pip one
# would bring a numpy that Debian's compiled modules may not take.
/usr/bin/python3 -m venv --system-site-packages "$WORK/test-venv"
extra=""
/usr/bin/python3 -c "import scipy" 2> /dev/null || extra=scipy
"$WORK/test-venv/bin/python" -m pip install -q --disable-pip-version-check "pytest>=7" \
    "pytest-qgis>=2" "hypothesis>=6.100" $extra

# 3. The plugin tests, the engine being the Light one (tests of Full-only features skip).
CROSSEARTH_TEST_ENGINE=$light_python CROSSEARTH_TEST_FIXTURES=$WORK/fixtures \
    $WORK/test-venv/bin/python -m pytest -q -ra -p no:cacheprovider tests/plugin

# 4. One end-to-end segment through qgis_process, the plugin enabled in a fresh profile.
profile=$WORK/qgis-profile
rm -rf "$profile" $WORK/out
cp -a tests/fixtures/qgis-settings "$profile"
mkdir -p $WORK/out
export QGIS_CUSTOM_CONFIG_PATH=$profile QGIS_PLUGINPATH=$WORK/crossearth CROSSEARTH_PYTHON=$light_python
qgis_process.bin plugins enable crossearth_qgis > /dev/null
started=$(seconds)
qgis_process.bin run crossearth:segmentraster -- \
    INPUT=$WORK/crossearth/resources/samples/raleigh_landsat7_sample.tif \
    OUTPUT=$WORK/out/classes.tif
segment_s=$(python3 -c "print(round($(seconds) - $started, 1))")
"$light_python" - "$WORK" << 'EOF'
import sys

import numpy as np
import rasterio

work = sys.argv[1]
with rasterio.open(f"{work}/out/classes.tif") as classes, rasterio.open(
    f"{work}/crossearth/resources/samples/raleigh_landsat7_sample.tif"
) as source:
    assert (classes.crs, classes.transform, classes.shape) == (
        source.crs, source.transform, source.shape
    ), "the class raster is not on the input's grid"
    counts = np.bincount(classes.read(1).ravel(), minlength=256)
    # The sample's collar is nodata in the source, so it is nodata (255) in the classes.
    valid = int((source.dataset_mask() > 0).sum())
    assert counts[:5].sum() == valid, f"{counts[:5].sum()} classified pixels, {valid} valid"
    assert counts[5:255].sum() == 0 and (counts[:5] > 0).sum() >= 3, counts[:5].tolist()
    print("matrix: classes", counts[:5].tolist())
EOF

# 5. Optionally (CROSSEARTH_MATRIX_FULL=1, several GB from PyPI: PyTorch with CUDA), the Full
# environment the same way, for its set-up time and size; its tests run in `make test`.
full='"full_setup_s": null, "full_bytes": null'
if [ "${CROSSEARTH_MATRIX_FULL:-0}" = 1 ]; then
    rm -rf "$WORK/engine-full"
    started=$(seconds)
    /usr/bin/python3 -m crossearth_qgis.environment.engine_setup --kind full --base /usr/bin/python3 \
        "$WORK/engine-full"
    full_s=$(python3 -c "print(round($(seconds) - $started, 1))")
    full_bytes=$(python3 -c "import json; print(json.load(open('$WORK/engine-full/.crossearth-engine.json'))['size_bytes'])")
    full="\"full_setup_s\": $full_s, \"full_bytes\": $full_bytes"
    rm -rf "$WORK/engine-full"
fi

cat > $WORK/result.json << EOF
{"release": "$release", "qgis": "$qgis", "python": "$python", "numpy": "$numpy",
 "light_setup_s": $setup_s, "light_bytes": $light_bytes, "segment_s": $segment_s, $full}
EOF
