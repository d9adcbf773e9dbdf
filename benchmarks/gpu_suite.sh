#!/usr/bin/env bash
# Every GPU measurement of the README in one go: timed default runs, throughput, and the
# accuracy sweeps (several processes share the GPU; each is bound by kernel launches, not by the GPU).
#   MNIST20K_DATA_DIR=... bash benchmarks/gpu_suite.sh OUTDIR [PARALLEL]
# SKIP_TIMING=1 skips parts 1-2; SWEEPS="name ..." runs only those sweeps of part 3, SWEEPS=none none.
set -u
out=${1:?usage: gpu_suite.sh OUTDIR [PARALLEL]}
parallel=${2:-8}
mkdir -p "$out/runs" "$out/results"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

nvidia-smi -L; $py -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'

# 0. The CUDA-graph step against eager steps (tests/test_step.py), where pytest is at hand.
if $py -m pytest --version > /dev/null 2>&1; then
  $py -m pytest -q -p no:cacheprovider tests/test_step.py 2>&1 | tail -n 3
else
  echo "pytest not installed: tests/test_step.py not run"
fi

if [ -z "${SKIP_TIMING:-}" ]; then
# 1. Full default runs, alone on the GPU, timed: plain, with the step in a CUDA graph, --amp --compile.
for flags in "" "--cuda-graph" "--amp --compile"; do
  name=default${flags// /}
  /usr/bin/time -f "$name wall %e s, max RSS %M KB" $py -m mnist20k train --device cuda --out "$out/runs/$name" $flags \
    > "$out/runs/$name.log" 2>&1
  tail -n 4 "$out/runs/$name.log"
  $py -c "import json,sys; m=[json.loads(l) for l in open(sys.argv[1])]; t=0
for r in m:
    t+=r['seconds']
    if r['test_accuracy']>=99.4: print(sys.argv[2], 'first >=99.40% at epoch', r['epoch'], 'after', round(t,2), 's'); break
print(sys.argv[2], 'loop seconds', round(sum(r['seconds'] for r in m),2), 'final', m[-1]['test_accuracy'])" \
    "$out/runs/$name/metrics.jsonl" "$name"
done

# 2. Throughput of one training step, seed pipeline against mnist20k's.
for flags in "" "--cuda-graph" "--amp --compile"; do
  $py benchmarks/throughput.py --device cuda --steps 300 --warmup 30 --workers 4 --json $flags \
    | tee -a "$out/results/throughput-cuda.jsonl"
done

fi

# 3. Accuracy sweeps, all at once, each seed in its own process: name model epochs recipe seeds [KEY=VALUE ...]
cat > "$out/sweeps.txt" <<'LIST'
seed-default seed 20 default 1,2,3,4,5
tiny-default tiny 15 default 1,2,3,4,5
seed-recipe seed 20 seed 1,2,3,4,5
seed-amp seed 20 default 1,2 amp=true
seed-cudagraph seed 20 default 1,2,3,4,5 cuda_graph=true
LIST
while read -r name model epochs recipe seeds sets; do
  echo "$py benchmarks/sweep.py --device cuda --model $model --epochs $epochs --recipe $recipe --seeds ${seeds//,/ } \
--jobs 5 --set $sets --out $out/results/$name.json > $out/results/$name.log 2>&1"
done < <(if [ -n "${SWEEPS:-}" ]; then grep -wF -f <(tr ' ' '\n' <<< "$SWEEPS") "$out/sweeps.txt"; else cat "$out/sweeps.txt"; fi) | xargs -P 0 -I{} bash -c "{}"
tail -n 1 "$out"/results/*.log
