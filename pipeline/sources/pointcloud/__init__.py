"""Point-cloud sources: header scan, LAS/LAZ/COPC/E57 decoding, CRS resolution (`reader` is the entry)."""
