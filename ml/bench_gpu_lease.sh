#!/usr/bin/env bash
# Issue 7's GPU checks in one call on a bare, offline GPU machine with PyTorch (a lent H100/H200 here):
# the CUDA-only tests (tests/test_cuda_graphs.py), then `make bench-gpu`'s benchmark (paper preset,
# 32 streams) and the tiny preset's, each one's output and log under $OUT. The packages the image lacks
# travel as wheels in .whl/ (ml/lease-wheels.txt). Each step has its own time limit, so one that hangs
# leaves the next its time; the whole script ends within about 7 minutes.
#   bash ml/bench_gpu_lease.sh        (SITE, OUT optional)
set -uo pipefail
start=$(date +%s)
site=${SITE:-/tmp/site}
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
export PYTHONPATH=$site:$PWD/ml
log="$OUT/gpu.log"
{
	date -u
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
	nproc
	python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} >"$log" 2>&1

step() { # name, seconds, command...: stdout to $OUT/name.out, stderr to $OUT/name.err
	local name=$1 limit=$2
	shift 2
	timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
	echo "$name: exit $? after $(($(date +%s) - start)) s" >>"$log"
}
step tests 150 python3 -m pytest --noconftest -p no:cacheprovider -q -rs tests/test_cuda_graphs.py
step paper 240 python3 -m swansphere bench --preset paper --device cuda --streams 32 --json
step tiny 90 python3 -m swansphere bench --preset tiny --device cuda --streams 4 --json

cat "$log"
tail -n 15 "$OUT/tests.out"
python3 - <<'EOF'
import json, os

for name in ("paper", "tiny"):
    try:
        r = json.load(open(os.path.join(os.environ["OUT"], f"{name}.out")))
    except (OSError, ValueError) as error:
        print(f"{name}: no JSON ({error}); the end of {name}.err:")
        print(open(os.path.join(os.environ["OUT"], f"{name}.err")).read()[-3000:])
        continue
    c = r["concurrency"]
    print(
        f"{name}: first chunk {r['time_to_first_chunk_s'] * 1e3:.1f} ms, RTF {r['real_time_factor']:.3f}, "
        f"full sequence {r['full_sequence_ratio']:.1f}x, global DiT {r['global_dit_ratio']:.2f}x; "
        f"{c['streams']} streams: p99 {c['time_to_first_chunk_p99_s'] * 1e3:.1f} ms "
        f"({c['p99_over_single']:.2f}x), aggregate RTF {c['aggregate_real_time_factor']:.4f}"
    )
    print("  per patch, one stream:", {k: round(v * 1e3, 2) for k, v in r["stages"].items()})
    print("  per stream per patch:", {k: round(v * 1e3, 2) for k, v in c["stages"].items()})
EOF
