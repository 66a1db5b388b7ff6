#!/usr/bin/env bash
# The tiny recipe (ml/train_tiny.sh ml/configs/tiny-gpu) on a bare, offline GPU machine with PyTorch
# (a lent H100/H200 here), everything worth keeping under $OUT: checkpoints, log, MLflow file store.
# The packages the image lacks travel as wheels in .whl/ (ml/lease-wheels.txt). First a 3-step smoke
# of every job on the GPU (fails fast, so a fix can be rerun; SMOKE=0 skips it when the lease has no
# time for a rerun), then the recipe inside BUDGET seconds.
#   BUDGET=575 bash ml/train_tiny_lease.sh      (SITE, OUT, CONFIGS, TRAIN_CLIPS, TRACKING, SMOKE optional)
set -uo pipefail
start=$(date +%s)
budget=${BUDGET:-580}
configs=${CONFIGS:-ml/configs/tiny-gpu}
repo=$PWD
site=${SITE:-/tmp/site}
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
log="$OUT/train.log"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
export PYTHONPATH=$site:$repo/ml MLFLOW_ALLOW_FILE_STORE=true
{
	date -u
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
	nproc
	python3 -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__)"
} >"$log" 2>&1

# Smoke: same script and configs, 3 steps each, 6 training clips, 2 held-out clips.
if [ "${SMOKE:-1}" != 0 ]; then
	rm -rf /tmp/smoke && mkdir -p /tmp/smoke/cfg && cp -r ml /tmp/smoke/
	for f in "$configs"/*.yaml; do
		sed -e 's/^steps: .*/steps: 3/' -e 's/^max_seconds: .*/max_seconds: 30/' -e 's/^batch_size: .*/batch_size: 2/' \
			-e 's/eval_clips: .*/eval_clips: 2/' -e 's/inputs_per_round: .*/inputs_per_round: 2/' \
			-e 's/candidates: .*/candidates: 3\n  pair_margin: 0.0/' -e 's/steps_per_round: .*/steps_per_round: 3/' \
			-e 's/sample_steps: .*/sample_steps: 2/' "$f" >"/tmp/smoke/cfg/$(basename "$f")"
	done
	(cd /tmp/smoke && MLFLOW_TRACKING_URI=file:///tmp/smoke/mlruns TRAIN_CLIPS=6 SYNTH_WORKERS=$(nproc) PYTHON=python3 \
		timeout 170 bash ml/train_tiny.sh cfg >/tmp/smoke/log 2>&1)
	smoke=$?
	echo "smoke exit $smoke after $(($(date +%s) - start))s" >>"$log"
	if [ "$smoke" != 0 ]; then
		cp /tmp/smoke/log "$OUT/smoke.log"
		tail -c 8000 /tmp/smoke/log
		exit 1
	fi
	grep -E "step 3:|held-out" /tmp/smoke/log | cut -c1-200 >>"$log"
fi

export MLFLOW_TRACKING_URI=${TRACKING:-file://$repo/mlruns}
mkdir -p mlruns
left=$((budget - ($(date +%s) - start) - 20))
echo "training budget ${left}s" >>"$log"
TRAIN_CLIPS=${TRAIN_CLIPS:-320} SYNTH_WORKERS=$(nproc) PYTHON=python3 \
	timeout --signal=TERM --kill-after=5 "$left" bash ml/train_tiny.sh "$configs" >>"$log" 2>&1
echo "train_tiny.sh exit $? after $(($(date +%s) - start))s" >>"$log"
for job in vae svac swansphere odpo; do
	[ -f "runs/tiny/$job/final.safetensors" ] && cp "runs/tiny/$job/final.safetensors" "$OUT/${job}_final.safetensors"
done
tar czf "$OUT/mlruns.tgz" --exclude='*.safetensors' mlruns 2>>"$log"
ls -la "$OUT" >>"$log"
echo "done after $(($(date +%s) - start))s" >>"$log"
grep -vE "Warning|warn\(|^\s*$" "$log" | tail -c 11000
