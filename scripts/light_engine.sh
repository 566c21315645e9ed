#!/usr/bin/env bash
# Makes build/engine-light, a Light engine environment, the way the plugin's "Set up engine
# environment" makes one (crossearth_qgis/environment/engine_setup.py), with the base interpreter given:
# first the Light wheels for that Python are downloaded into build/wheelhouse-light, then the
# set-up installs from that folder only. The set-up tests serve the same folder on 127.0.0.1.
# Used by scripts/setup.sh (the host's QGIS) and scripts/matrix_chroot.sh (each chroot's).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-/usr/bin/python3}
# Any Python of the same version with pip does the download (Debian's python3 may have none).
downloader=${2:-$base}
wheels=build/wheelhouse-light
light=build/engine-light
mkdir -p build
"$base" -c "import pathlib, sys; sys.path.insert(0, '.'); \
from crossearth_qgis.environment.requirements import requirements_text; \
print(requirements_text(pathlib.Path('pyproject.toml'), 'light'), end='')" > build/requirements-light.txt
echo "light engine: downloading the Light wheels for $("$base" --version) into $wheels"
"$downloader" -m pip download -q --disable-pip-version-check --only-binary=:all: \
    -d "$wheels" -r build/requirements-light.txt pip setuptools
if [ -d "$light" ] && [ ! -f "$light/.crossearth-engine.json" ]; then
    echo "light engine: $light exists but the set-up did not make it; move it away" >&2
    exit 2
fi
echo "light engine: making $light with the plugin's own set-up"
PIP_NO_INDEX=1 PIP_FIND_LINKS="$PWD/$wheels" "$base" -m crossearth_qgis.environment.engine_setup \
    --kind light --base "$base" "$light"
