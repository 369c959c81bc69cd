#!/usr/bin/env bash
# Times `make demo` (VinBigData and RSNA flavours) from an empty output folder against the
# 5-minute budget of issue "One command"; prints seconds and the ratio to the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=300
make -s setup
for ds in vinbigdata rsna; do
  out=$(mktemp -d)
  t0=$(date +%s.%N)
  .venv/bin/cxrdet demo "$ds" --out "$out/demo" > "$out/log.txt" 2>&1 || { tail -20 "$out/log.txt"; exit 1; }
  t1=$(date +%s.%N)
  secs=$(python3 -c "print(f'{$t1 - $t0:.0f}')")
  echo "demo $ds: ${secs} s for the whole pipeline (budget ${BUDGET} s, ratio $(python3 -c "print(f'{($t1 - $t0) / $BUDGET:.2f}')"))"
  grep -E "mAP|score" "$out/log.txt" | tail -1
  rm -rf "$out"
done
