#!/usr/bin/env bash
# The GPU check: the `gpu` tests, then the throughput benchmark (ResNet-50, 224 px: fp32, bf16,
# channels-last), the input pipeline against the training step, the Grad-CAM benchmark at
# batch 128, and the device-hours of the shipped sweeps (`align sweep --estimate`). Sized to finish within 8 minutes on one H200; prints every figure docs/benchmarks.md
# records, with the date and the device.
#
#     bash benchmarks/gpu_check.sh                 # on a machine with a CUDA GPU
#     bash benchmarks/gpu_check.sh --device cpu    # smoke test at tiny sizes (tests/test_benchmarks.py)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

device=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        *) echo "usage: $0 [--device cuda|cpu]" >&2; exit 2 ;;
    esac
done

if [ "$device" = cpu ]; then  # the same steps at sizes that take seconds
    throughput=(--backbones smallcnn --sizes 32 --batch 6 --rounds 1 --warmup 0)
    loader=(--size 32 --source-size 48 --batch 6 --batches 2 --warmup-batches 1 --per-class 2
            --backbone smallcnn --rounds 1)
    gradcam=(--model smallcnn --size 32 --batch 4 --rounds 1 --warmup 0 --no-captum)
    estimate=(--tiny --configs configs/vlcs_in_distribution.yaml)
else
    throughput=(--backbones resnet50 --sizes 224 --batch 96 --rounds 5 --warmup 2)
    loader=(--size 224 --batch 96 --backbone resnet50 --precision bf16 --batches 20)
    gradcam=(--model resnet50 --size 224 --batch 128 --rounds 5 --warmup 2)
    estimate=()
fi

echo "== $(date -u +%Y-%m-%dT%H:%MZ) on $(python -c "import sys, torch; d = sys.argv[1]; \
print(torch.cuda.get_device_name() if d == 'cuda' else 'cpu', '| torch', torch.__version__)" "$device")"
echo "== gpu tests"
python -m pytest -q -m gpu tests/test_gpu.py  # on the CPU: collected, all skipped
echo "== training throughput (fp32, bf16, channels-last)"
python benchmarks/bench_throughput.py --device "$device" --precisions fp32,bf16 --channels-last \
    "${throughput[@]}"
echo "== input pipeline against the training step"
python benchmarks/bench_loader.py --device "$device" "${loader[@]}"
echo "== Grad-CAM"
python benchmarks/bench_gradcam.py --device "$device" "${gradcam[@]}"
echo "== device-hours of the shipped sweeps"
python benchmarks/sweep_estimate.py --device "$device" "${estimate[@]}"
