#!/usr/bin/env bash
# Re-trains the shipped RSNA phantom detector (weights/README.md) from scratch, fully offline.
# Usage: bash weights/train_rsna_phantom.sh [WORKDIR] [N_PATIENTS]   (needs ../shared/data/rsna)
source "$(dirname "$0")/phantom_common.sh"
phantom_setup runs/rsna_phantom 400 ../shared/data/rsna "$@"
# 1. real labels minus the demo's embedded patients, 60% positive
$PY - "$SHARED" "$WORK" "$N" <<'PY'
import sys, numpy as np, pandas as pd
from pathlib import Path
shared, work, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
df = pd.read_csv(shared / "stage_2_train_labels.csv.gz")
info = pd.read_csv(shared / "stage_2_detailed_class_info.csv.gz").drop_duplicates("patientId")
demo = set(pd.read_csv("data_prep/data/rsna_subset_labels.csv")["patientId"])
df = df[~df["patientId"].isin(demo) & df["patientId"].isin(set(info["patientId"]))]
pos = df.groupby("patientId")["Target"].max()
rng = np.random.default_rng(2026)
n_pos = int(round(0.6 * n))
ids = list(rng.choice(sorted(pos.index[pos == 1]), n_pos, replace=False)) + \
      list(rng.choice(sorted(pos.index[pos == 0]), n - n_pos, replace=False))
df[df["patientId"].isin(ids)].to_csv(work / "labels.csv", index=False)
info[info["patientId"].isin(ids)].to_csv(work / "class_info.csv", index=False)
print(f"{len(ids)} patients ({n_pos} positive) -> {work}/labels.csv")
PY
[ -f "$WORK/data/stage_2_train_labels.csv" ] || $CX synth rsna "$WORK/data" --labels "$WORK/labels.csv" --meta "$WORK/class_info.csv" --n "$N" --n-test 0 --seed 11
$CX prep rsna_phantom --data "$WORK/data" --out "$WORK/prep"
$CX train rsna_phantom --prep "$WORK/prep" --fold 0 project="$WORK/runs" name=det
cp "$WORK/runs/det/weights/best.pt" weights/rsna_phantom_yolo11n.pt
echo "weights written: weights/rsna_phantom_yolo11n.pt"
