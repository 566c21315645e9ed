#!/usr/bin/env bash
# Idempotent set-up of everything the project needs on Debian bookworm:
# the Debian packages (QGIS, GDAL/rasterio, Xvfb) and a .venv at the repo root that sees them
# (--system-site-packages) with the pinned engine dependencies and this project installed editable
# (with the dev tools, the `scale` extra: Ray, for sharded runs, and the ONNX runtimes).
set -euo pipefail
cd "$(dirname "$0")/.."

# g++ and python3-dev: torch.compile (--compile) builds its CPU kernels with them.
DEB_PACKAGES=(qgis python3-qgis python3-rasterio xvfb python3-venv g++ python3-dev)

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

stamp=.venv/.crossearth-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing Python dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade "pip>=23"
    .venv/bin/python -m pip install -q -e ".[dev,scale,onnx,openvino]"
    touch "$stamp"
fi
