"""RuhrTwin: the geodata pipeline behind the Ruhr digital twin.

Raw deliveries (aerial/mobile point clouds, orthophotos, DGM, ALKIS cadastre) go in; a validated release
of OGC 3D Tiles layers and planning overlays comes out. See README.md for the tour.
"""

__version__ = "0.1.0"
