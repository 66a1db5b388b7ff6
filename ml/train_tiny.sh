#!/usr/bin/env bash
# The shipped tiny model's recipe (docs/training.md): SynthSphere data, then the four jobs, each
# starting from the last (runs/tiny/{vae,svac,swansphere,odpo}/final.safetensors).
#
#   ml/train_tiny.sh [CONFIG_DIR]     ml/configs/tiny (default: 2 CPU cores) or ml/configs/tiny-gpu
#
# PYTHON is the interpreter that imports swansphere (default python3), TRAIN_CLIPS the number of
# training clips (default 160), SYNTH_WORKERS the processes that render them (default 1).
set -euo pipefail
configs=${1:-ml/configs/tiny}
python=${PYTHON:-python3}
clips=${TRAIN_CLIPS:-160}
workers=${SYNTH_WORKERS:-1}
synth=(--seconds 4 --max-sources 1 --width 128 --workers "$workers")

"$python" -m swansphere synth --out data/synthsphere/train --clips "$clips" --seed 1 "${synth[@]}" >/dev/null
# Held-out clips come from a seed never used in training.
"$python" -m swansphere synth --out data/synthsphere/heldout --clips 50 --seed 424242 "${synth[@]}" >/dev/null
for job in vae svac swansphere odpo; do
	"$python" -m swansphere.train.cli "$job" --config "$configs/$job.yaml"
done
