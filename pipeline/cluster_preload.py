"""The settings of `twin build`'s local Dask cluster for a cluster started by hand, as a Dask preload:

    dask scheduler --preload pipeline.cluster_preload
    dask worker tcp://HOST:8786 --nthreads 1 --preload-nanny pipeline.cluster_preload

A nanny passes its settings on to the worker processes it starts; with this preload it starts them
without `MALLOC_TRIM_THRESHOLD_`, also where the environment it was started from sets it. The settings:
`pipeline.runtime.cluster_settings`; why they matter: docs/operations.md ("Distributed builds")."""

from __future__ import annotations

import os

import dask

from pipeline.runtime import cluster_settings

dask.config.set(cluster_settings())
os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # (worker processes inherit the nanny's environment)
