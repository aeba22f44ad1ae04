"""Releases: manifest, validation, atomic publish, locking, incremental cache, access classes."""
