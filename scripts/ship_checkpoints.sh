#!/usr/bin/env bash
# Trains, selects on the validation split and certifies the shipped checkpoints; the exact commands and
# the selection rules are in scripts/ship_models.py. Every step is resumable: rerun after an interruption
# and finished steps are skipped (checkpoints resume, certifications are stored).
# Then the chosen models in checkpoints/<case>-next/ replace checkpoints/<case>/ (test samples stay).
# Usage: CSRS_DATA=/path/to/folder/with/zips scripts/ship_checkpoints.sh [cifar10|ham10000|ham10000-cost10|imagenette|all] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
what=${1:-all}
work=${2:-work}
for case in cifar10 ham10000 ham10000-cost10 imagenette; do
  if [[ $what == "$case" || $what == all ]]; then
    OMP_NUM_THREADS=${THREADS:-1} $PY scripts/ship_models.py "$case" "$work/$case"
  fi
done
