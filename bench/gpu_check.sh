#!/usr/bin/env bash
# The prepared GPU check, one call on a CUDA machine (< 4 minutes on an H100/H200):
#   1. the gpu-marked tests (tests/test_gpu.py: tiny random models, CUDA against CPU),
#   2. bench/large_gpu.py: an 8B-shaped model built in memory (gradients per 1k tokens,
#      GPTQ per block, peak memory).
# Installs nothing, downloads nothing, imports nothing from app/. Figures go to OUT_DIR:
#   gpu_tests.log, gpu_tests.xml, gpu.json (commit it as bench/results/gpu.json).
#   bash bench/gpu_check.sh OUT_DIR
set -uo pipefail
out="${1:?usage: bash bench/gpu_check.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
status=0
python -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py \
  --junitxml "$out/gpu_tests.xml" 2>&1 | tee "$out/gpu_tests.log" || status=1
python bench/large_gpu.py --gptq-blocks 1 --calib 64 2>&1 | tee "$out/large_gpu.log" || status=1
cp bench/results/large_gpu.json "$out/gpu.json" 2>/dev/null || status=1
exit $status
