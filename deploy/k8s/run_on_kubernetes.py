"""Run the nightly build against a Dask cluster on Kubernetes (dask-kubernetes operator).

Requires `pip install dask-kubernetes`, the Dask operator in the cluster, an image with this repository
installed (`pip install -e .` + node_modules for the glTF validator and CesiumJS), and the project
volume (raw data, cache, out) mounted at the same path in the driver and the workers (ReadWriteMany).
"""

import sys

from dask_kubernetes.operator import KubeCluster, make_cluster_spec

from pipeline.cli.main import main

spec = make_cluster_spec(
    name="ruhrtwin",
    image="registry.example.org/ruhrtwin:latest",
    n_workers=8,
    resources={"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "1", "memory": "4Gi"}},
    # the settings of `twin build`'s local cluster (docs/operations.md "Distributed builds")
    worker_command="dask worker --nthreads 1 --preload-nanny pipeline.cluster_preload",
)
for c in spec["spec"]["worker"]["spec"]["containers"] + spec["spec"]["scheduler"]["spec"]["containers"]:
    c["volumeMounts"] = [{"name": "twin", "mountPath": "/srv/ruhrtwin"}]
for role in ("worker", "scheduler"):
    spec["spec"][role]["spec"]["volumes"] = [
        {"name": "twin", "persistentVolumeClaim": {"claimName": "ruhrtwin-data"}}
    ]

with KubeCluster(custom_cluster_spec=spec) as cluster:
    code = main(["build", sys.argv[1], "--quiet", "--scheduler", cluster.scheduler_address])
sys.exit(code)
