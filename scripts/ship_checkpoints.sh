#!/usr/bin/env bash
# Trains and certifies the shipped checkpoints (issues 5 and 6). Every step is resumable: rerun the
# script after an interruption and finished steps are skipped (checkpoints resume, counts are cached).
# Usage: CSRS_DATA=/path/to/folder/with/zips scripts/ship_checkpoints.sh [cifar10|ham10000|all]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
T=${THREADS:-2}
what=${1:-all}

if [[ $what == cifar10 || $what == all ]]; then
  D=checkpoints/cifar10
  common=(--dataset cifar10-jpeg --arch resnet8 --sigma 0.25 --threads "$T" --log-every 20)
  $PY -m csrs_core train --method gaussian "${common[@]}" --epochs 12 --batch 128 --lr 0.1 --out $D/cohen
  $PY -m csrs_core train --method cohen-r "${common[@]}" --cost seedwise:3 --weight 1.2 --epochs 2 --batch 128 \
      --lr 0.01 --init $D/cohen.pt --out $D/cohen-r
  warm=(--gauss-num 8 --batch 64 --lr 0.01 --epochs 2 --max-steps-per-epoch 200 --init $D/cohen.pt)
  $PY -m csrs_core train --method macer "${common[@]}" "${warm[@]}" --lam 12 --gamma 8 --out $D/macer
  $PY -m csrs_core train --method cs-macer "${common[@]}" "${warm[@]}" --cost seedwise:3 --lam 3 --gamma1 4 \
      --gamma2 16 --out $D/cs-macer-seed3
  $PY -m csrs_core train --method cs-macer "${common[@]}" "${warm[@]}" --cost 'pairwise:3>5' --lam 3 --gamma1 4 \
      --gamma2 16 --out $D/cs-macer-pair3to5
  for m in cohen cohen-r macer cs-macer-seed3 cs-macer-pair3to5; do
    $PY -m csrs_core certify --checkpoint $D/$m.pt --dataset cifar10-jpeg --split test --per-class 50 \
        --n0 100 --n 1000 --alpha 0.001 --batch 256 --cost seedwise:3 --threads "$T" \
        --save-sample $D/test-sample.npz
  done
fi

if [[ $what == ham10000 || $what == all ]]; then
  D=checkpoints/ham10000
  common=(--dataset ham10000 --image-size 32 --arch resnet8 --sigma 0.5 --threads "$T" --log-every 20)
  $PY -m csrs_core train --method gaussian "${common[@]}" --epochs 15 --batch 128 --lr 0.1 --out $D/cohen
  for w in 1.1 1.2; do
    $PY -m csrs_core train --method cohen-r "${common[@]}" --cost 'pairwise:1>0' --weight $w --epochs 3 \
        --batch 128 --lr 0.01 --init $D/cohen.pt --out $D/cohen-r-w$w
  done
  warm=(--gauss-num 8 --batch 64 --lr 0.01 --epochs 2 --max-steps-per-epoch 60 --init $D/cohen.pt)
  $PY -m csrs_core train --method macer "${common[@]}" "${warm[@]}" --lam 12 --gamma 8 --out $D/macer
  $PY -m csrs_core train --method cs-macer "${common[@]}" "${warm[@]}" --cost 'pairwise:1>0' --lam 3 --gamma1 4 \
      --gamma2 16 --out $D/cs-macer
  for m in cohen cs-macer cohen-r-w1.2 macer cohen-r-w1.1; do
    $PY -m csrs_core certify --checkpoint $D/$m.pt --dataset ham10000 --image-size 32 --split test \
        --num-examples 500 --n0 100 --n 1000 --alpha 0.001 --batch 256 --cost 'pairwise:1>0' --eps 0.5 \
        --threads "$T" --save-sample $D/test-sample.npz
  done
fi
