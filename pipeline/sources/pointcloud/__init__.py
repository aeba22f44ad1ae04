"""Point-cloud sources: header scan, LAS/LAZ/COPC/E57 decoding, CRS resolution."""

from pipeline.sources.pointcloud.header import PointFileInfo, WorkUnit, plan_units, scan_file

__all__ = ["PointFileInfo", "WorkUnit", "plan_units", "scan_file"]
