"""Start Dask workers as Slurm jobs (dask-jobqueue), then run the ordinary build against them.

Requires `pip install dask-jobqueue`; the venv and data/ must be on a file system every node mounts.
Exit code = the build's exit code (docs/operations.md).
"""

import sys

import dask
from dask_jobqueue import SLURMCluster

from pipeline.cli.main import main
from pipeline.runtime import cluster_settings

dask.config.set(cluster_settings())  # the scheduler runs in this process: the settings of the local cluster

cluster = SLURMCluster(
    queue="normal",
    cores=1,  # one thread per worker process: numba/lazrs want their own core
    processes=1,
    memory="4GB",  # keep runtime.memory a bit below this
    walltime="08:00:00",
    job_script_prologue=["cd /srv/ruhrtwin", "source .venv/bin/activate"],
    # the workers get the settings of `twin build`'s local cluster (docs/operations.md)
    worker_extra_args=["--nthreads", "1", "--preload-nanny", "pipeline.cluster_preload"],
)
cluster.adapt(minimum=2, maximum=64)
try:
    code = main(["build", sys.argv[1], "--quiet", "--scheduler", cluster.scheduler_address])
finally:
    cluster.close()
sys.exit(code)
