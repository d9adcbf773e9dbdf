#!/usr/bin/env bash
# Every GPU measurement of the README in one go, most important first, each part logged on its own:
#   0. the CUDA-graph capture tests (tests/test_step.py; --ema and a teacher inside the captured step among them)
#   1. timed runs, one at a time on the GPU, seed 1: default (captured step), default --no-cuda-graph,
#      --recipe fast, default --ema 0.999 (what the average costs a captured step)
#   2. accuracy sweeps, seeds 1-5, all at once (several processes share the GPU: each is bound by its
#      one Python thread, not by the GPU): default captured against default eager, --recipe fast, and
#      the short-schedule candidates of SWEEPS_FILE (default: benchmarks/gpu_sweeps.txt)
#
#   MNIST20K_DATA_DIR=... bash benchmarks/gpu_suite.sh OUTDIR
# SKIP_TIMING=1 skips part 1; SWEEPS="name ..." runs only those sweeps of part 2, SWEEPS=none none.
# A failing part is reported and the script goes on; its exit code is the number of failed parts.
set -u -o pipefail
out=${1:?usage: gpu_suite.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/runs" "$out/sweeps"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
failed=0
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }

nvidia-smi -L; $py -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'

# 0. The CUDA-graph step against eager steps, where pytest is at hand.
if $py -m pytest --version > /dev/null 2>&1; then
  $py -m pytest -q -p no:cacheprovider -rs tests/test_step.py > "$out/pytest.log" 2>&1 || fail "tests/test_step.py"
  tail -n 5 "$out/pytest.log"
else
  echo "pytest not installed: tests/test_step.py not run"
fi

# 1. Full runs alone on the GPU, timed: the loop time and time to 99.4% are in each run's last lines.
if [ -z "${SKIP_TIMING:-}" ]; then
  for flags in "" "--no-cuda-graph" "--recipe fast" "--ema 0.999"; do
    name=default${flags// /}
    /usr/bin/time -f "$name: wall %e s, max RSS %M KB" $py -m mnist20k train --device cuda --seed 1 \
      --out "$out/runs/$name" $flags > "$out/runs/$name.log" 2>&1 || fail "train $flags"
    grep -E "^(epoch|final|time to|never|.*wall)" "$out/runs/$name.log" | tail -n 4
  done
fi

# 2. Accuracy sweeps (mnist20k sweep), all at once, five runs of each at a time: name model recipe seeds [KEY=VALUE ...]
list=${SWEEPS_FILE:-$here/gpu_sweeps.txt}
selected() { grep -v '^#' "$list" | awk -v want=" ${SWEEPS:-} " '!/^ *$/ && (want == "  " || index(want, " " $1 " "))'; }
while read -r name model recipe seeds sets; do
  [ -n "$name" ] || continue
  grid=""
  for pair in $sets; do grid="$grid --set $pair"; done
  echo "$py -m mnist20k sweep --device cuda --model $model --recipe $recipe --seeds $seeds --jobs 5$grid \
--out $out/sweeps/$name > $out/sweeps/$name.log 2>&1 || echo 'FAILED: sweep $name'"
done < <(selected) | xargs -P 0 -I{} bash -c "{}" | tee "$out/sweeps-failed.txt"
failed=$((failed + $(grep -c FAILED "$out/sweeps-failed.txt")))
for f in "$out"/sweeps/*.log; do tail -n 1 "$f"; done
echo "failed parts: $failed"
exit "$failed"
