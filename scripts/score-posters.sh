#!/usr/bin/env bash
# Score posters alone under the P-PoDD paper's CIFAR-10 evaluation protocol (ConvNet-128, Adam at
# lr 0.001, batches of 96 patches, fixed overlap labels), with NETS nets, and random real images
# at each poster's pixel budget and at that of a five-poster pool. One JSON per score in OUT,
# which `ppodd summarize OUT` turns into a table.
#
#   scripts/score-posters.sh POSTER_DIR DATA_ROOT OUT [NETS] [CHECKPOINTS] [POSTER ...]
#
# POSTER_DIR holds <run>_poster.pt files (the P-PoDD repository's checkpoints/ folder); DATA_ROOT
# is CIFAR-10 as JPEG class folders (train/<class>/, test/<class>/); CHECKPOINTS is a YAML list
# such as [300] or [300,600,1000,2000]; POSTER names the files to score (default: all of them).
# RANDOM_REAL=0 skips the random-real baselines.
set -euo pipefail
posters=${1:?POSTER_DIR} data=${2:?DATA_ROOT} out=${3:?OUT}
nets=${4:-2} checkpoints=${5:-[300]}
shift $(( $# < 5 ? $# : 5 ))
ppodd=${PPODD:-ppodd}
common=(--config configs/cifar10.yaml --set data.name=imagefolder --set "data.root=$data"
        --set "eval.nets=$nets" --set "eval.checkpoints=$checkpoints")
steps=$(tr -d '[] ' <<<"$checkpoints" | tr ',' '-')
mkdir -p "$out"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for file in "$posters"/*_poster.pt; do names+=("$(basename "$file")"); done
fi
for name in "${names[@]}"; do
  "$ppodd" evaluate "$posters/$name" "${common[@]}" --json "$out/${name%.pt}-k$nets-s$steps.json"
done
[ "${RANDOM_REAL:-1}" = 0 ] && exit 0
# 153 x 60 = 9,180 pixels: one poster; five posters (the pool the paper reports): 45,900.
for pixels in 9180 45900; do
  "$ppodd" evaluate random-real --pixels "$pixels" "${common[@]}" --json "$out/random-real-$pixels-k$nets-s$steps.json"
done
