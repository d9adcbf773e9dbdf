#!/usr/bin/env bash
# Every GPU measurement of the README in one go: timed default runs, throughput, and the
# accuracy sweeps (several processes share the GPU; each is bound by kernel launches, not by the GPU).
#   MNIST20K_DATA_DIR=... bash benchmarks/gpu_suite.sh OUTDIR [PARALLEL]
set -u
out=${1:?usage: gpu_suite.sh OUTDIR [PARALLEL]}
parallel=${2:-8}
mkdir -p "$out/runs" "$out/results"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

nvidia-smi -L; $py -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'

# 1. Full default runs, alone on the GPU, timed: plain, then --amp --compile.
for flags in "" "--amp --compile"; do
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
for flags in "" "--amp --compile"; do
  $py benchmarks/throughput.py --device cuda --steps 300 --warmup 30 --workers 4 --json $flags \
    | tee -a "$out/results/throughput-cuda.jsonl"
done

# 3. Accuracy sweeps: name model epochs recipe [KEY=VALUE ...]
cat > "$out/sweeps.txt" <<'LIST'
seed-default seed 20 default
tiny-default tiny 15 default
seed-recipe seed 20 seed
seed-drop0 seed 20 default dropout=0
tiny-drop0 tiny 15 default dropout=0
seed-lr0.05 seed 20 default lr=0.05
seed-lr0.2 seed 20 default lr=0.2
tiny-lr0.2-drop0 tiny 15 default lr=0.2 dropout=0
seed-drop0.1 seed 20 default dropout=0.1
seed-wd1e-4 seed 20 default weight_decay=1e-4
seed-rotonly seed 20 default translate=0
seed-ls0.1 seed 20 default label_smoothing=0.1
tiny-lr0.05-drop0 tiny 15 default lr=0.05 dropout=0
tiny-wd1e-4-drop0 tiny 15 default weight_decay=1e-4 dropout=0
seed-amp seed 20 default amp=true
seed-amp-compile seed 20 default amp=true compile=true
LIST
while read -r name model epochs recipe sets; do
  echo "$py benchmarks/sweep.py --device cuda --model $model --epochs $epochs --recipe $recipe --set $sets --out $out/results/$name.json > $out/results/$name.log 2>&1"
done < "$out/sweeps.txt" | xargs -P "$parallel" -I{} bash -c "{}"
tail -n 1 "$out"/results/*.log
