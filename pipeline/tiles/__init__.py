"""Formats only: glTF/GLB, pnts/b3dm, tileset.json, subtrees, styles. Nothing here knows about Dask or the CLI."""
