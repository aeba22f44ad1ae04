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
        inside, rgb, nir = _sample_one(Path(p), np.asarray(x)[idx], np.asarray(y)[idx], points_crs_wkt, bands)
        hit = idx[inside]
        out["rgb"][hit] = rgb
        if nir is not None:
            out.setdefault("nir", np.zeros(n, dtype=np.uint16))[hit] = nir
        todo[hit] = False
    return out


def _sample_one(
    path: Path, x: np.ndarray, y: np.ndarray, points_crs_wkt: str, bands: dict[str, int] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Which points one raster covers, and their colours and NIR (None: no NIR band, or no point inside)."""
    import rasterio
    from pyproj import CRS, Transformer
    from rasterio.windows import Window

    from pipeline.crs import horizontal_of

    bands = {"red": 1, "green": 2, "blue": 3, "nir": 4, **(bands or {})}
    try:
        src = rasterio.open(path)
    except Exception as e:
        raise InputError(f"cannot open orthophoto: {e}", path=path) from e
    with src:
        if src.crs is None:
            raise CrsError("orthophoto has no CRS", path=path)
        rcrs = CRS.from_user_input(src.crs.to_wkt())
        horiz = horizontal_of(CRS.from_wkt(points_crs_wkt))
        if not rcrs.equals(horiz, ignore_axis_order=True):
            x, y = Transformer.from_crs(horiz, rcrs, always_xy=True).transform(x, y)
        col, row = ~src.transform * (np.asarray(x, float), np.asarray(y, float))
        col, row = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
        inside = (col >= 0) & (row >= 0) & (col < src.width) & (row < src.height)
        if not inside.any():
            return inside, np.zeros((0, 3), np.uint8), None
        col, row = col[inside], row[inside]
        c0, r0 = int(col.min()), int(row.min())
        has_nir = src.count >= bands["nir"]
        idx = [bands["red"], bands["green"], bands["blue"], *([bands["nir"]] if has_nir else [])]
        data = src.read(idx, window=Window(c0, r0, int(col.max()) + 1 - c0, int(row.max()) + 1 - r0))
        vals = data[:, row - r0, col - c0]
        rgb = np.clip(vals[:3] >> 8 if data.dtype == np.uint16 else vals[:3], 0, 255)  # 16-bit: top byte
        return inside, rgb.T.astype(np.uint8), vals[3].astype(np.uint16) if has_nir else None
