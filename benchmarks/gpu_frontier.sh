#!/usr/bin/env bash
# The studies of docs/frontier.md on one GPU, JOBS workers sharing it, then the sweeps that confirm them:
#   micro    the cnn family at most 4,000 parameters, 20 epochs, seeds 1-2 a trial, the lower counts
#   nano     the same at most 2,000
#   front    accuracy and parameters as two objectives, 1,000 to 20,000 parameters, 20 epochs, seeds 1-2
#   confirm  the best trial of micro and nano on seeds 1-10, each point of front's Pareto front on seeds 1-5
#
#   MNIST20K_DATA_DIR=... bash benchmarks/gpu_frontier.sh OUTDIR [PART ...]      (default: all four, in order)
#
# Every study's journal is OUTDIR/<part>/study.log: the same command with --out there continues it, on a GPU or
# on a CPU (docs/frontier.md). A study stops after STUDY_S seconds (default 240; SIGTERM keeps every finished
# trial and queues the running ones again) or at TRIALS trials (default 200), and writes its tune.json then.
# JOBS (default 8) workers share the GPU: each is bound by its one Python thread, not by the GPU.
# DEVICE (default cuda) and EXTRA (more tune options) are for a smoke test elsewhere:
#   DEVICE=cpu EXTRA="--epochs 1 --max-batches 2" TRIALS=2 JOBS=1 bash benchmarks/gpu_frontier.sh /tmp/f
# OUTDIR/frontier.tar.gz holds what a lease brings back: journals, tune.json, study.png, sweep.json and logs.
#
# The device machine has torch but neither Optuna nor this data: here, once (both folders are ignored by git),
#   mkdir -p data/MNIST/raw && for f in ../shared/data/MNIST/raw/*-ubyte; do gzip -c "$f" > "data/MNIST/raw/${f##*/}.gz"; done
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl optuna==5.1.0 alembic==1.20.1 sqlalchemy==2.1.9 colorlog==6.12.0 mako==1.4.3
# then, carrying data and .whl (about 17 MB), one call for the studies and one for the sweeps:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site &&
#   MNIST20K_DATA_DIR=data STUDY_S=200 bash benchmarks/gpu_frontier.sh /tmp/f micro nano; cp /tmp/f/frontier.tar.gz $OUT/
set -u -o pipefail
out=${1:?usage: gpu_frontier.sh OUTDIR [micro nano front confirm]}
shift
parts=${*:-micro nano front confirm}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
jobs=${JOBS:-8}
failed=0
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }

nvidia-smi -L 2> /dev/null
$py -c 'import torch, optuna; print("torch", torch.__version__, "optuna", optuna.__version__)' || exit 1
# a data folder of the gzipped files alone (light to carry) is unpacked once
raw=${MNIST20K_DATA_DIR:?set MNIST20K_DATA_DIR}/MNIST/raw
if [ ! -f "$raw/t10k-images-idx3-ubyte" ] && [ -f "$raw/t10k-images-idx3-ubyte.gz" ]; then
  mkdir -p /tmp/mnist20k-data/MNIST/raw && for f in "$raw"/*.gz; do
    gunzip -c "$f" > "/tmp/mnist20k-data/MNIST/raw/$(basename "$f" .gz)"
  done
  export MNIST20K_DATA_DIR=/tmp/mnist20k-data
fi

# the searched shapes: each stage's widths, its convs, a transition, the head, padding, BatchNorm's weights,
# a shared last block; and the peak lr and the weight average, the recipe's two levers at this size
shape=(--search arg.conv1=plain,separable --search arg.conv2=plain,separable,factorised
  --search arg.head=gap,maps --search arg.pad=0,1 --search arg.affine=true,false --search arg.shared=1,2
  --search lr=0.05:0.3:log --search ema=0,0.999)
declare -A search=(
  [micro]="--budget 4000 --search arg.stage1=(8,8),(8,12),(10,10),(12,12),(8,16)
    --search arg.stage2=(12,12),(16,16),(12,12,12),(16,16,16),(20,20),(24,24) --search arg.transition=0,8,12"
  [nano]="--budget 2000 --search arg.stage1=(4,4),(4,8),(6,8),(8,8),(8,12)
    --search arg.stage2=(8,8),(8,8,8),(12,12),(12,12,12),(16,16) --search arg.transition=0,8"
  [front]="--budget 20000 --objectives accuracy,params --search arg.stage1=(4,8),(8,8),(8,16),(16,16),(16,32)
    --search arg.stage2=(8,8),(12,12),(16,16),(16,16,16),(24,24),(32,32),(24,24,24) --search arg.transition=0,8,16"
)

study() {  # name: the study, stopped by time or by its trials, its record written either way
  local name=$1
  # shellcheck disable=SC2086
  timeout -s TERM "${STUDY_S:-240}" $py -m mnist20k tune --model cnn --epochs 20 --seeds 1-2 --aggregate min \
    "${shape[@]}" ${search[$name]} --trials "${TRIALS:-200}" --jobs "$jobs" --sampler-seed 1 \
    --device "${DEVICE:-cuda}" ${EXTRA:-} --out "$out/$name" > "$out/$name.log" 2>&1
  local code=$?
  [ "$code" -eq 0 ] || [ "$code" -eq 124 ] || [ "$code" -eq 143 ] || fail "study $name (exit $code)"
  tail -n 3 "$out/$name.log"
}

confirm() {  # each study's confirm commands from its tune.json, run JOBS at a time
  for name in micro nano front; do
    [ -f "$out/$name/tune.json" ] || continue
    $py - "$out/$name/tune.json" "$name" << 'EOF'
import json, sys
record, name = json.load(open(sys.argv[1])), sys.argv[2]
if name == "front":  # each point of the front on seeds 1-5, as written
    for point in record["pareto"]:
        print(point["confirm"])
elif record["confirm"]:  # a new preset's default holds on seeds 1-10, not 1-5
    print(record["confirm"].replace("--seeds 1-5", "--seeds 1-10 --jobs 5"))
EOF
  done | sed "s#^mnist20k #$py -m mnist20k #" | xargs -d '\n' -P "$jobs" -I{} bash -c "{} > /dev/null 2>&1 || echo 'FAILED: {}'" \
    | tee "$out/confirm-failed.txt"
  failed=$((failed + $(grep -c FAILED "$out/confirm-failed.txt")))
  $py benchmarks/report.py "$out"/*/confirm*/sweep.json > "$out/confirm.md" 2>&1 || fail "report"
}

for part in $parts; do
  echo "== $part"
  case $part in
    micro | nano | front) study "$part" ;;
    confirm) confirm ;;
    *) fail "no part called $part" ;;
  esac
done
# what comes back: no checkpoints, only the records
(cd "$out" && find . \( -name tune.json -o -name study.png -o -name sweep.json \
  -o -name '*.log' -o -name '*.md' -o -name '*.txt' \) -not -path './frontier.tar.gz' -print0 \
  | tar -czf frontier.tar.gz --null -T -)
echo "failed parts: $failed"
exit "$failed"
