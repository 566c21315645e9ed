"""`segment` reads GDAL virtual paths and URLs as written (pathlib would collapse their '//')."""

from __future__ import annotations

import numpy as np
import rasterio

from .conftest import LANDSAT, http_server, write_raster
from .test_cli import package, run_cli  # noqa: F401 (fixture)


def test_segment_a_vsicurl_url(tmp_path, capsys, package, monkeypatch):  # noqa: F811
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1")
    served = tmp_path / "served"
    served.mkdir()
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3])[:, :64, :80]
    write_raster(served / "scene.tif", data, descriptions=["blue", "green", "red"])
    with http_server(served) as address:
        remote = f"/vsicurl/{address}/scene.tif"
        code, out, err = run_cli(
            capsys, "segment", remote, tmp_path / "x.tif", "--model", package.path,
            "--progress=none", "--device=cpu",
        )  # fmt: skip
    assert code == 0, err
    local = tmp_path / "local.tif"
    code, _, err = run_cli(
        capsys, "segment", served / "scene.tif", local, "--model", package.path,
        "--progress=none", "--device=cpu",
    )  # fmt: skip
    assert code == 0, err
    with rasterio.open(tmp_path / "x.tif") as a, rasterio.open(local) as b:
        assert a.crs == b.crs and a.transform == b.transform
        assert np.array_equal(a.read(1), b.read(1))
        assert a.tags()["CROSSEARTH_SOURCE"] == "scene.tif"
