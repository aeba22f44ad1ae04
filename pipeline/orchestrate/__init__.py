"""Orchestration: the only place that builds Dask task graphs around the pure stages."""
