#!/usr/bin/env bash
# The GPU figures of the README, in one run (issues #13, #16): per-token and first-token ratios of DIRECTER
# against plain decoding at batch 1 (scripts/benchmark.py, model.generate as plain) and batch 32
# (scripts/method_speed.py, our `none` and model.generate), bundled model in bfloat16; then the device-map
# check (scripts/device_map_check.py): the bundled model split over cuda:0 and the CPU, and placed by
# device_map="auto", token for token against one device.
#
#     bash scripts/gpu_figures.sh [OUT_DIR]        # ~5 min on an H200; needs CUDA, no network
#     DEVICE=cpu DTYPE=float32 bash scripts/gpu_figures.sh /tmp/figs   # the same on a CPU (slow)
#
# Writes benchmark-short.txt, benchmark-long.txt, method-speed-b32.txt and device-map.txt (each ends with its summary)
# to OUT_DIR (default: gpu-figures/) and prints the summaries.
set -euo pipefail
out="${1:-gpu-figures}"
device="${DEVICE:-cuda}"
dtype="${DTYPE:-bfloat16}"
mkdir -p "$out"
python -c "import torch, sys; sys.exit(0 if '$device' != 'cuda' or torch.cuda.is_available() else 'no CUDA device: set DEVICE=cpu or run on a GPU machine')"
python scripts/benchmark.py --device "$device" --dtype "$dtype" --repeats 2 --max-new-tokens 64 \
    > "$out/benchmark-short.txt" 2> "$out/benchmark-short.log"
python scripts/benchmark.py --device "$device" --dtype "$dtype" --repeats 1 --max-new-tokens 64 --context-tokens 1000 \
    > "$out/benchmark-long.txt" 2> "$out/benchmark-long.log"
python scripts/method_speed.py --device "$device" --dtype "$dtype" --method none --method directer --generate \
    --sample 64 --batch-size 32 --max-new-tokens 256 --repeats 1 \
    > "$out/method-speed-b32.txt" 2> "$out/method-speed-b32.log"
if [ "$device" = cuda ]; then
    { python scripts/device_map_check.py --dtype "$dtype" --split-gpu-cpu
      python scripts/device_map_check.py --dtype "$dtype" --device-map auto; } > "$out/device-map.txt" 2> "$out/device-map.log" || true
fi
for f in benchmark-short benchmark-long method-speed-b32 device-map; do
    [ -f "$out/$f.txt" ] || continue
    echo "== $f"
    tail -n 8 "$out/$f.txt"
done
