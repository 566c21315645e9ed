#!/usr/bin/env bash
# Idempotent set-up of the development environment on Debian 12 (bookworm) or 13 (trixie):
# the Debian packages (QGIS, GDAL/rasterio, Xvfb, debootstrap for `make matrix`) and a .venv at
# the repo root that sees them (--system-site-packages: the plugin tests import Debian's QGIS)
# with the engine's requirements and this project installed editable (with the dev tools, the
# `scale` extra: Ray, for sharded runs, and the ONNX runtimes).
#
# The engine environment the plugin makes for a user is a different thing: self-contained,
# wheels from PyPI only (crossearth_qgis/environment/engine_env.py); `make matrix` builds that one.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++ and python3-dev: torch.compile (--compile) builds its CPU kernels with them.
# debootstrap: `make matrix` builds the other Debian releases' QGIS as chroots.
DEB_PACKAGES=(qgis python3-qgis python3-rasterio xvfb python3-venv g++ python3-dev debootstrap)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv (system site packages visible for QGIS and rasterio)"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi

# The venv shares Debian's compiled modules (QGIS, rasterio, scipy), which must keep the numpy
# major version they were built with: numpy 2 in the venv made Debian 12's rasterio fail at
# import ("numpy.dtype size changed, may indicate binary incompatibility"; measured with
# python3-rasterio 1.3.6 and numpy 2.2.6). Debian 13 ships numpy 2, so nothing is held there.
constraints=.venv/constraints.txt
system_numpy=$(/usr/bin/python3 -c "import numpy; print(numpy.__version__)" 2>/dev/null || echo "")
case "$system_numpy" in
    1.*) echo "numpy<2  # Debian's compiled modules use numpy $system_numpy" > "$constraints" ;;
    *) : > "$constraints" ;;
esac

stamp=.venv/.crossearth-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
    echo "setup: installing Python dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade "pip>=23"
    .venv/bin/python -m pip install -q -c "$constraints" -e ".[dev,scale,onnx,openvino]"
    touch "$stamp"
fi

# A Light engine environment made exactly as the plugin makes one for a user (self-contained,
# PyPI wheels only), from a local wheel folder that the set-up tests also install from (served
# on 127.0.0.1: tests never reach the internet).
light_stamp=build/.engine-light-installed
if [ ! -f "$light_stamp" ] || [ pyproject.toml -nt "$light_stamp" ] || [ scripts/light_engine.sh -nt "$light_stamp" ]; then
    bash scripts/light_engine.sh /usr/bin/python3 .venv/bin/python
    touch "$light_stamp"
fi
