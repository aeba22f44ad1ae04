#!/bin/bash
# Same bytes of `twin points` between two code trees (issue 14, docs/pointcloud.md step 15):
#   bench/points_samebytes.sh <tree> <outdir>   -> <outdir>/summary.txt: sha256 of every output file, exit
# code and first error line of 56 runs on ../shared/realdata; `diff` the summaries of two trees.
# Environment: PYTHON (default: this repository's .venv/bin/python: a worktree without a venv needs it),
# REALDATA (default: ../shared/realdata beside this repository).
set -u
TREE=$(realpath "$1"); OUT=$2
if [ -e "$OUT" ]; then echo "$OUT exists: give a new folder" >&2; exit 2; fi
REPO=$(cd "$(dirname "$0")/.." && pwd); R=${REALDATA:-$REPO/../shared/realdata}; PY=${PYTHON:-$REPO/.venv/bin/python}
if [ ! -x "$PY" ]; then echo "no Python at $PY: set PYTHON=/path/to/.venv/bin/python" >&2; exit 2; fi
if [ ! -d "$R" ]; then echo "no real data at $R: set REALDATA=/path/to/shared/realdata" >&2; exit 2; fi
mkdir -p "$OUT"
run() { # name args...
  local name=$1; shift
  local d="$OUT/$name"
  (cd "$TREE" && PYTHONPATH="$TREE" nice -n 5 $PY -m pipeline.cli.main points "$@" --out "$d" --quiet >"$OUT/$name.stdout" 2>"$OUT/$name.stderr"); local rc=$?
  { echo "== $name rc=$rc err=$(grep -m1 -i 'error' "$OUT/$name.stderr" | sed "s#$OUT##g; s#$TREE/pipeline#TREE/pipeline#g")";
    if [ -d "$d" ]; then (cd "$d" && find . -type f ! -name pointcloud.json -print0 | sort -z | xargs -0 -r sha256sum); \
      [ -f "$d/pointcloud.json" ] && $PY -c "import json,sys; d=json.load(open('$d/pointcloud.json')); print('pointcloud.json', d.get('points'), d.get('checksum'), d.get('tiles'), d.get('depth'))"; fi; } >> "$OUT/summary.txt"
  rm -rf "$d"
}
run autzen10m $R/autzen/autzen_10M.laz --assume-ellipsoidal --jobs 2
run autzen10m_copc10 $R/autzen/autzen_10M.laz --assume-ellipsoidal --jobs 2 --copc --format 1.0
run autzen10m_scan $R/autzen/autzen_10M.laz --assume-ellipsoidal --jobs 2 --attribute scan_angle --implicit
run autzen_class_ortho $R/autzen/autzen_class.las --assume-ellipsoidal --orthophoto $R/autzen/autzen_ortho_cog.tif --jobs 2
run autzen_class_j1 $R/autzen/autzen_class.las --assume-ellipsoidal --implicit --copc --no-meshopt --jobs 1
for f in $R/las_edge_cases/*; do b=$(basename $f)
  run edge_$b $f --jobs 2
  run edge_${b}_ell $f --assume-ellipsoidal --copc --jobs 2
  run edge_${b}_10 $f --assume-ellipsoidal --format 1.0 --jobs 1
  run edge_${b}_local $f --crs local --anchor 7.0,51.4,100 --jobs 2
done
for f in $R/nrw/*.laz; do b=$(basename $f)
  run nrw_$b $f --crs EPSG:25832+7837 --jobs 2 --copc
  run nrw_${b}_10 $f --crs EPSG:25832+7837 --jobs 2 --format 1.0 --implicit --keep-unknown-classes
done
run nrw_both $R/nrw/*.laz --crs EPSG:25832+7837 --jobs 2
for f in $R/e57/*; do b=$(basename $f)
  run e57_$b $f --crs local --anchor 7.0,51.4,100 --jobs 2
  run e57_${b}_10 $f --crs local --anchor 7.0,51.4,100 --jobs 1 --format 1.0 --copc
done
T=$OUT/in; mkdir -p $T
head -c 3000000 $R/nrw/3dm_32_360_5721_crop300_360650_5721600.laz > $T/trunc.laz
head -c 20000 $R/las_edge_cases/warsaw_small.las > $T/trunc.las
: > $T/empty.laz
run bad_trunc_laz $T/trunc.laz --jobs 2
run bad_trunc_las $T/trunc.las --jobs 2
run bad_skip $T/trunc.laz $R/las_edge_cases/autzen-utm.las --on-bad-tile skip --assume-ellipsoidal --jobs 2
run bad_empty $T/empty.laz --jobs 2
run bad_missing $T/nothere.laz --jobs 2
run bad_nocrs $R/las_edge_cases/test_utm17.las --jobs 2
rm -rf $T
