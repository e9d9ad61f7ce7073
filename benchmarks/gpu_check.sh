#!/usr/bin/env bash
# The GPU check, run on a lent CUDA machine from the repository root (the machine's own torch,
# no install): tests on CUDA (supervised and MAML-TRPO with its policy on the GPU), a smoke
# reproduction, and the speed benchmark of metakit's strategies (compiled meta_step included). Results go to $OUT (default benchmarks/results).
set -uo pipefail
OUT="${OUT:-benchmarks/results}"
export PYTHONPATH=src PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_meta_gradients.py 2>&1 | tee "$OUT/gpu-pytest.log"
python3 -m metakit.cli reproduce sinusoid --budget smoke --device cuda --out "$OUT/gpu-smoke" --quiet
python3 benchmarks/speed.py --device cuda \
    --impls metakit,metakit-loop,metakit-chunk8,metakit-compiled,metakit-meta_step-compiled,metakit-meta_step-compiled-loop \
    --rounds 5 --out "$OUT/speed-cuda.json"
