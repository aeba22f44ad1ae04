"""Point colours: sRGB -> linear conversion for glTF, and colours sampled from an orthophoto."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import CrsError, InputError


def srgb8_shift(max_value: int) -> int:
    """Right shift that turns a work unit's LAS colours into 8 bits: 8 for 16-bit colours, 0 when every value
    fits in 8 bits (many writers store 0-255 in the 16-bit fields)."""
    return 8 if max_value > 255 else 0


def sample_orthophoto(
    path: Path | str | tuple[str, ...] | list[str],
    x: np.ndarray,
    y: np.ndarray,
    points_crs_wkt: str,
    bands: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Nearest-pixel sample of an RGB(I) orthophoto at the points' source coordinates.

    `path` may be one raster or the tiles of a tiled delivery (each point takes the first tile that
    covers it). Returns 'rgb' (N,3) uint8 sRGB and, when the raster has a NIR band, 'nir' uint16. Points
    outside every raster get black / 0.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    n = len(x)
    out: dict[str, np.ndarray] = {"rgb": np.zeros((n, 3), dtype=np.uint8)}
    todo = np.ones(n, dtype=bool)
    for p in paths:
        if not todo.any():
            break
        idx = np.flatnonzero(todo)
        smp = _sample_one(Path(p), np.asarray(x)[idx], np.asarray(y)[idx], points_crs_wkt, bands)
        hit = smp.pop("_inside")
        out["rgb"][idx[hit]] = smp["rgb"][hit]
        if "nir" in smp:
            out.setdefault("nir", np.zeros(n, dtype=np.uint16))[idx[hit]] = smp["nir"][hit]
        todo[idx[hit]] = False
    return out


def _sample_one(
    path: Path, x: np.ndarray, y: np.ndarray, points_crs_wkt: str, bands: dict[str, int] | None
) -> dict[str, np.ndarray]:
    import rasterio
    from pyproj import CRS, Transformer
    from rasterio.windows import Window

    bands = {"red": 1, "green": 2, "blue": 3, "nir": 4, **(bands or {})}
    try:
        src = rasterio.open(path)
    except Exception as e:
        raise InputError(f"cannot open orthophoto: {e}", path=path) from e
    with src:
        if src.crs is None:
            raise CrsError("orthophoto has no CRS", path=path)
        rcrs = CRS.from_user_input(src.crs.to_wkt())
        pcrs = CRS.from_wkt(points_crs_wkt)
        horiz = pcrs.sub_crs_list[0] if pcrs.sub_crs_list else pcrs
        if not rcrs.equals(horiz, ignore_axis_order=True):
            t = Transformer.from_crs(horiz, rcrs, always_xy=True)
            x, y = t.transform(x, y)
        inv = ~src.transform
        col, row = inv * (np.asarray(x, float), np.asarray(y, float))
        col = np.floor(col).astype(np.int64)
        row = np.floor(row).astype(np.int64)
        n = len(col)
        inside = (col >= 0) & (row >= 0) & (col < src.width) & (row < src.height)
        rgb = np.zeros((n, 3), dtype=np.uint8)
        nir = np.zeros(n, dtype=np.uint16)
        if inside.any():
            c0, c1 = int(col[inside].min()), int(col[inside].max()) + 1
            r0, r1 = int(row[inside].min()), int(row[inside].max()) + 1
            win = Window(c0, r0, c1 - c0, r1 - r0)
            idx = [bands["red"], bands["green"], bands["blue"]]
            has_nir = src.count >= bands["nir"]
            if has_nir:
                idx.append(bands["nir"])
            data = src.read(idx, window=win)
            rr, cc = row[inside] - r0, col[inside] - c0
            vals = data[:, rr, cc]
            if data.dtype != np.uint8:
                vals8 = np.clip(vals[:3] >> 8 if data.dtype == np.uint16 else vals[:3], 0, 255)
            else:
                vals8 = vals[:3]
            rgb[inside] = vals8.T.astype(np.uint8)
            if has_nir:
                nir[inside] = vals[3].astype(np.uint16)
            return {"rgb": rgb, "nir": nir, "_inside": inside} if has_nir else {"rgb": rgb, "_inside": inside}
        return {"rgb": rgb, "_inside": inside}
