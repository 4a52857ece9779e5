#!/usr/bin/env bash
# One prepared run for a session that is lent the GPU machine (15 minutes in all).
#
# Prepare here first (the GPU machine has torch, Lightning, torch-geometric and torchaudio but
# no network; at most 64 MiB travel with `carry`):
#   diffplat data prepare qm9                                # data/qm9/qm9.npz, 28 MB
#   pip download --no-deps -d wheels rdkit jsonargparse docstring-parser typeshed-client \
#       safetensors pyyaml                                   # check the total stays < 35 MB
# then run, with carry = ["data/qm9", "wheels"] and timeout_s ~ 540:
#   bash benchmarks/gpu_session.sh
# Results land in $OUT (the device tool brings them back); copy the figures, with the device
# name and date, into docs/results.md.
set -uo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
python -m pip install --quiet --no-index --find-links wheels rdkit jsonargparse safetensors \
    pyyaml 2>&1 | tail -2
python -m pip install --quiet --no-deps -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/device.txt"

# 1. the GPU-only tests (bf16 + torch.compile)
timeout 120 python -m pytest -q tests/test_gpu.py 2>&1 | tail -3 | tee "$OUT/gpu_tests.txt"

# 2. throughput at EDM's model size: fp32, bf16, bf16 + compile
for flags in "" "--bf16" "--bf16 --compile"; do
  timeout 150 python benchmarks/molecules_speed.py --train-batches 100 --sample-num 10000 \
      --sample-batch 2500 --steps 100 $flags 2>&1 | grep -v -i warn | tee -a "$OUT/molecules_speed.txt"
done

# 3. quality per GPU-minute: 6 minutes of qm9.yaml, then 1000 molecules at 100 NFE
timeout 420 diffplat fit -c configs/molecules/qm9.yaml --trainer.max_time 00:00:06:00 \
    --trainer.default_root_dir "$OUT/qm9-6min" --trainer.logger false \
    --checkpoint.every_n_train_steps 300 \
    --trainer.enable_progress_bar false --model.sample_num 0 > "$OUT/fit.log" 2>&1
timeout 120 diffplat evaluate --ckpt "$OUT/qm9-6min/checkpoints/last.ckpt" --num 1000 \
    --sampler dpmpp_2m --steps 100 --batch-size 1000 --json "$OUT/qm9-6min.json" --no-progress \
    2>&1 | tail -10 | tee "$OUT/qm9-6min.txt"
