"""The demo's 360° panorama images: what they show is known from the generated scene.

An independent 2D ray cast (shapely) from each recording position finds the first building at a given
bearing; the image column of that bearing (centre = the CSV heading) shows its facade colour on the wall
band between the windows. The compiled renderer equals its pixel-by-pixel numpy reference.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
import shapely

from pipeline.sources.demo import mobile as mob
from pipeline.sources.demo import streetview as sv
from pipeline.sources.demo.city import build_city
from tests._panorama_release import first_building

BOUNDS = (362000.0, 5716000.0, 362200.0, 5716200.0)


@pytest.fixture(scope="module")
def city():
    return build_city(42, BOUNDS, ("2021", "2024"))


@pytest.fixture(scope="module")
def images(city, tmp_path_factory) -> tuple[list[tuple], dict[str, Path]]:
    rows = mob.panoramas(city)
    files = sv.write_panorama_images(tmp_path_factory.mktemp("pano"), city, rows, count=4)
    return rows, {p.stem: p for p in files}


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == (sv.IMAGE_WIDTH, sv.IMAGE_WIDTH // 2)
        return np.asarray(im.convert("RGB"))


def test_images_are_equirectangular_with_heading_metadata(city, images):
    rows, files = images
    assert len(files) == 4
    by_id = {r[5]: r for r in rows}
    picked = [r[5] for i, r in enumerate(rows) if i in sv.image_rows(city, 4)]
    assert sorted(files) == sorted(picked)
    # consecutive positions of one track, 5 m apart
    xy = np.array([by_id[i][1:3] for i in picked])
    assert np.allclose(np.hypot(*np.diff(xy, axis=0).T), 5.0, atol=0.01)
    for image_id, path in files.items():
        data = path.read_bytes()
        assert data[:2] == b"\xff\xd8"
        _read(path)
        m = re.search(rb"<GPano:PoseHeadingDegrees>([0-9.]+)<", data)
        assert m and float(m.group(1)) == pytest.approx(by_id[image_id][4], abs=0.005)
        assert b"<GPano:ProjectionType>equirectangular<" in data


def test_facade_colour_at_its_bearing(city, images):
    """Wall bands (0.5 m and 2.6 m above the building's base: between the window rows) at the bearing of
    the first building the independent ray cast finds show that building's facade colour."""
    rows, files = images
    by_id = {r[5]: r for r in rows}
    checked = 0
    colours_seen = set()
    for image_id, path in files.items():
        img = _read(path).astype(float)
        h, w, _ = img.shape
        _t, x, y, z, heading, _ = by_id[image_id]
        for rel_bearing in range(-150, 180, 30):
            bearing = heading + rel_bearing
            hit = first_building(city, x, y, bearing, z=z)
            if hit is None or hit[1] < 3.0:
                continue
            i, d = hit
            s = city.structures[i]
            want = sv.facade_colour(i)
            fade = min(0.35, d / 600.0)
            want = want * (1 - fade) + sv.SKY_HORIZON * fade
            col = int(((rel_bearing + 180.0) / 360.0) * w)
            ok = 0
            for rel in (0.5, 2.6):
                zt = s.base + rel
                if zt >= s.base + s.roof_in(1).eave:
                    continue
                elev = math.degrees(math.atan2(zt - z, d + 0.15))
                row = int((90.0 - elev) / 180.0 * h)
                px = img[row - 1 : row + 2, col - 2 : col + 3].reshape(-1, 3).mean(axis=0)
                if np.abs(px - want).max() < 14:
                    ok += 1
            assert ok >= 1, (image_id, rel_bearing, i, round(d, 2), want, img[row, col])
            checked += 1
            colours_seen.add(tuple(sv.facade_colour(i)))
    assert checked >= 8
    # and where the ray cast finds no building within the view range, those facade colours are absent
    misses = 0
    for image_id, path in files.items():
        img = _read(path).astype(float)
        h, w, _ = img.shape
        _t, x, y, z, heading, _ = by_id[image_id]
        for rel_bearing in range(-170, 180, 10):
            if first_building(city, x, y, heading + rel_bearing, reach=sv.VIEW_RANGE) is not None:
                continue
            b = math.radians(heading + rel_bearing)
            end = (x + sv.VIEW_RANGE * math.sin(b), y + sv.VIEW_RANGE * math.cos(b))
            if any(
                shapely.LineString([(x, y), end]).intersects(s.geom) for s in city.structures if s.present[1]
            ):
                continue  # hidden by a crown, not empty
            col = int(((rel_bearing + 180.0) / 360.0) * w)
            for elev in (-3.0, -8.0):
                px = img[int((90.0 - elev) / 180.0 * h), col]
                for c in colours_seen:
                    assert np.abs(px - np.array(c)).max() > 20, (image_id, rel_bearing, px, c)
            misses += 1
    assert misses >= 4


def test_sky_above_and_vehicle_below(images):
    _rows, files = images
    img = _read(next(iter(files.values()))).astype(float)
    assert np.abs(img[5].mean(axis=0) - sv.SKY_ZENITH).max() < 12
    assert np.abs(img[-5].mean(axis=0) - sv.VEHICLE_RGB).max() < 8


def test_compiled_renderer_equals_numpy_reference(city):
    rows = mob.panoramas(city)
    pick = sv.image_rows(city, 2)
    scene = sv.Scene(city, np.array([rows[i][1] for i in pick]), np.array([rows[i][2] for i in pick]))
    _t, x, y, z, heading, _ = rows[pick[0]]
    fast = scene.render(x, y, z, heading, width=256)
    ref = scene.render_numpy(x, y, z, heading, width=256)
    assert fast.shape == ref.shape == (128, 256, 3)
    same = np.all(np.abs(fast.astype(int) - ref.astype(int)) <= 1, axis=2)
    assert same.mean() > 0.995, same.mean()
    # the scene is not trivial: sky, ground, facades and crowns all appear
    assert len(np.unique(ref.reshape(-1, 3), axis=0)) > 20


def test_deterministic_bytes(city, images, tmp_path):
    rows, files = images
    again = sv.write_panorama_images(tmp_path, city, rows, count=4)
    for p in again:
        assert p.read_bytes() == files[p.stem].read_bytes()


def test_image_count_zero_writes_nothing(city, tmp_path):
    assert sv.write_panorama_images(tmp_path / "none", city, mob.panoramas(city), count=0) == []
    assert not (tmp_path / "none").exists()


def test_jpeg_decodes_without_pillow_specific_markers(images):
    """The files open in any decoder: baseline JPEG with an APP1 XMP segment."""
    from PIL import Image

    _rows, files = images
    data = next(iter(files.values())).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        assert im.info.get("progressive") is None
    assert b"http://ns.adobe.com/xap/1.0/\x00" in data
