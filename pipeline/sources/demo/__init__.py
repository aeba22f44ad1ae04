"""Deterministic demo district: synthetic stand-ins for every delivery the twin consumes.

`generate_demo(out, ...)` writes, for a square district near Gelsenkirchen (EPSG:25832, DHHN2016 heights)::

    out/
      alkis/alkis_vereinfacht_demo.gpkg          Flurstueck, GebauedeBauwerk, NutzungFlurstueck, VerwaltungsEinheit
      aerial/<epoch>/3dm_32_<E>_<N>_<size>_nw_<epoch>.laz     two ALS epochs (LAS 1.2, PF 1, AdV classes)
      dop/dop10rgbi_32_<E>_<N>_<size>_nw_<epoch2>.tif         RGBI orthophoto, 0.1 m
      dgm/dgm1_32_<E>_<N>_<size>_nw_<epoch2>.tif              1 m terrain
      mobile/gsc_<epoch2>_32_<E>_<N>_<size>.laz               mobile mapping (LAS 1.4, PF 7, ASPRS)
      mobile/panoramas.csv                                    time,x,y,z,heading,image_id
      mobile/panoramas/<image_id>.jpg                         360° images of a few positions (equirect.)
      truth/buildings.csv, changes.csv, truth.json            ground truth
      README.md

Modules: ``city`` (layout and epoch changes), ``roofs`` (roof height functions), ``terrain``, ``points``
(ALS simulation), ``rasters`` (orthophoto, DGM), ``mobile`` (street scans, panoramas), ``streetview``
(panorama images), ``cadastre``
(GeoPackage), ``truth``, ``grid`` (tile grid and file names), ``generate`` (the driver).

Determinism: one random stream for the layout (seed), independent streams per tile and epoch
(``SeedSequence([seed, stream, epoch, ix, iy])``) and per mobile track chunk; fixed LAS creation dates,
GeoPackage timestamps (OGR_CURRENT_DATE) and no timestamps in GeoTIFFs. Memory is bounded by one tile:
the layout (objects, not points) is built once, points and rasters are made and written tile by tile.

Timing: scale 1 (20.8 M aerial points in two epochs, 47 M mobile points at the default mobile density,
rasters, cadastre, truth) takes about 170 s CPU on 2 shared cores; details in the docstring of ``generate``.
"""

from pipeline.sources.demo.generate import DemoSummary, generate_demo

__all__ = ["DemoSummary", "generate_demo"]
