"""Start Dask workers as Slurm jobs (dask-jobqueue), then run the ordinary build against them.

Requires `pip install dask-jobqueue`; the venv and data/ must be on a file system every node mounts.
Exit code = the build's exit code (docs/operations.md).
"""

import sys

from dask_jobqueue import SLURMCluster

from pipeline.cli.main import main

cluster = SLURMCluster(
    queue="normal",
    cores=1,  # one thread per worker process: numba/lazrs want their own core
    processes=1,
    memory="4GB",  # keep runtime.memory a bit below this
    walltime="08:00:00",
    job_script_prologue=["cd /srv/ruhrtwin", "source .venv/bin/activate"],
    worker_extra_args=["--nthreads", "1"],
)
cluster.adapt(minimum=2, maximum=64)
try:
    code = main(["build", sys.argv[1], "--quiet", "--scheduler", cluster.scheduler_address])
finally:
    cluster.close()
sys.exit(code)
