#!/usr/bin/env bash
# The GPU check (bench/README.md, "GPU check"), made to travel to a bare GPU machine that has its
# own PyTorch and reaches no package registry. From the repository root:
#
#   scripts/gpu-check.sh --prepare [ARCHIVE]   # here: fill .carry/ with what that machine lacks
#   scripts/gpu-check.sh                       # there (or here, at toy sizes): run the check
#
# --prepare downloads the wheels of the pure-Python packages ppodd needs that the machine's image
# does not hold (structlog, submitit) into .carry/wheels, copies the CIFAR-10 JPEG archive
# (ARCHIVE, default ../shared/data/cifar10-jpeg.tar.xz, else one made from data/cifar10) to
# .carry/, and prints what would travel (the device tool's limit is 64 MiB).
#
# The run installs each carried wheel whose package does not import, unpacks the archive once,
# runs `python -m bench gpu` on it and leaves three files in $OUT (default
# /tmp/ppodd-gpu-check-out): gpu-check.log, gpu-results.tgz (every part's JSON, the device tests'
# report and the short run's log) and the summary JSON. Without CUDA the check runs at toy sizes.
# PYTHON (default python3) is the interpreter; CHECK_SECONDS (default 480) bounds the check;
# CHECK_ARGS goes to it as well (e.g. CHECK_ARGS="--parts outer,eval" to rerun two parts).
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.carry
python=${PYTHON:-python3}

if [ "${1:-}" = --prepare ]; then
  archive=${2:-../shared/data/cifar10-jpeg.tar.xz}
  mkdir -p "$carry/wheels"
  pip=${PIP:-.venv/bin/pip}
  for package in structlog submitit; do
    version=$("$pip" show "$package" | sed -n 's/^Version: //p')
    "$pip" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform any -d "$carry/wheels" "$package==$version"
  done
  if [ -f "$archive" ]; then
    install -m 644 "$archive" "$carry/cifar10-jpeg.tar.xz"
  else
    tar -cJf "$carry/cifar10-jpeg.tar.xz" -C data/cifar10 train test
  fi
  tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
  carried=$(du -sb "$carry" | cut -f1)
  ls -l "$carry" "$carry/wheels"
  echo "travels: working tree $((tree / 1024)) KiB + $carry $((carried / 1024)) KiB = $(((tree + carried) / 1048576)) MiB of 64"
  exit 0
fi

out=${OUT:-/tmp/ppodd-gpu-check-out}
work=$(mktemp -d /tmp/ppodd-gpu-check.XXXXXX)
mkdir -p "$out" "$work/results"
exec > >(tee "$out/gpu-check.log") 2>&1
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi: no GPU here, so the check runs at toy sizes"
"$python" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'

missing=()
for wheel in "$carry"/wheels/*.whl; do
  [ -e "$wheel" ] || continue
  module=$(basename "$wheel" | cut -d- -f1)
  "$python" -c "import $module" 2>/dev/null || missing+=("$wheel")
done
if [ ${#missing[@]} -gt 0 ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" "${missing[@]}"
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed from $carry/wheels: ${missing[*]}"
fi

data=/tmp/ppodd-cifar10
if [ ! -d "$data/train" ]; then
  mkdir -p "$data"
  "$python" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
    "$carry/cifar10-jpeg.tar.xz" "$data"
fi
export PPODD_CACHE=${PPODD_CACHE:-/tmp/ppodd-cache} PYTHONUNBUFFERED=1

read -r -a extra <<<"${CHECK_ARGS:-}"
status=0
timeout "${CHECK_SECONDS:-480}" "$python" -m bench gpu --out "$work/results" -- --data "$data" \
  --work "$work/run" "${extra[@]}" || status=$?
cp "$work"/run/*.log "$work"/run/*.xml "$work/results/" 2>/dev/null || true
tar -czf "$out/gpu-results.tgz" -C "$work/results" .
cp "$work"/results/gpu_summary_*.json "$out/" 2>/dev/null || true
ls -l "$out"
exit "$status"
