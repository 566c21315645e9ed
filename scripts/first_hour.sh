#!/usr/bin/env bash
# A new user's first hour in a real QGIS window under Xvfb (scripts/first_hour.py): a fresh
# profile and home, the plugin zip, a Light engine set up from the Options page, a first
# styled result, the model suggestion and the greyed downloads; screenshots and timings go to
# OUT (default build/first_hour). FIRST_HOUR_OFFLINE=1 installs the Light wheels from
# build/wheelhouse-light (made by `make setup`), so the timing excludes downloads.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/build/first_hour}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 "$repo/scripts/build_plugin.py" >/dev/null
zip="$(ls -t "$repo"/dist/crossearth_qgis-*.zip | head -1)"
"$repo/build/engine-light/bin/python" - "$repo/resources/samples/raleigh_landsat7_sample.tif" \
    "$work/rgb.tif" <<'PY'
import sys, rasterio
with rasterio.open(sys.argv[1]) as src:
    profile, data = src.profile, src.read([3, 2, 1])
profile.update(count=3)
with rasterio.open(sys.argv[2], "w", **profile) as dst:
    dst.write(data)
    for band, name in enumerate(("red", "green", "blue"), 1):
        dst.set_band_description(band, name)
PY
export HOME="$work/home" XDG_DATA_HOME="$work/home/.local/share"
mkdir -p "$HOME"
export FIRST_HOUR_OUT="$out" FIRST_HOUR_ZIP="$zip" FIRST_HOUR_RGB="$work/rgb.tif"
export FIRST_HOUR_SAMPLE="$repo/resources/samples/raleigh_landsat7_sample.tif"
export FIRST_HOUR_STARTED="$(python3 -c 'import time; print(time.time())')"
unset CROSSEARTH_PYTHON QGIS_PLUGINPATH PYTHONPATH QGIS_CUSTOM_CONFIG_PATH CROSSEARTH_MODELS_DIR
export QT_QPA_PLATFORM=xcb  # a real X server (Xvfb), not Qt's offscreen platform
if [ "${FIRST_HOUR_OFFLINE:-0}" = 1 ]; then
    export PIP_NO_INDEX=1 PIP_FIND_LINKS="$repo/build/wheelhouse-light"
fi
xvfb-run -a -s "-screen 0 1600x1000x24" qgis --nologo --profiles-path "$work/profiles" \
    --code "$repo/scripts/first_hour.py" >"$out/qgis.log" 2>&1 || true
cat "$out/first_hour.json"
