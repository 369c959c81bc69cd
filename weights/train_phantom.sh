#!/usr/bin/env bash
# Re-trains the shipped weights (weights/README.md) from scratch, fully offline.
# Usage: bash weights/train_phantom.sh [WORKDIR] [N_IMAGES]   (needs ../shared/data/vinbigdata)
source "$(dirname "$0")/phantom_common.sh"
phantom_setup runs/phantom 640 ../shared/data/vinbigdata "$@"
# 1. real labels minus the demo's embedded images, 70% abnormal
vinbig_subset 2026 0.7
# 2. phantoms at those real boxes (all images go to train; the held-out set is fold 0)
[ -f "$WORK/data/train.csv" ] || $CX synth vinbigdata "$WORK/data" --labels "$WORK/labels.csv" --meta "$WORK/meta.csv" --n "$N" --n-test 0 --size 1024 --seed 11
# 3. PNGs, fused boxes, folds, YOLO dataset
$CX prep phantom --data "$WORK/data" --out "$WORK/prep"
# 4. detector on fold 0 (held out): 20 epochs from scratch, then 15 more from its last checkpoint
#    (a second schedule: warm-up, mosaic off for its last 10 epochs), while the 2-class filter
#    trains beside it (ultralytics uses one torch thread per process on a 2-core CPU)
R="$WORK/runs"
[ -f "$R/det/weights/best.pt" ] || $CX train phantom --prep "$WORK/prep" --fold 0 project="$R" name=det
[ -f "$R/det2/weights/best.pt" ] || $CX train phantom --prep "$WORK/prep" --fold 0 project="$R" name=det2 \
    model="$R/det/weights/last.pt" epochs=15 &
[ -f "$R/cls/weights/best.pt" ] || $CX train-cls phantom --prep "$WORK/prep" --fold 0 project="$R" name=cls
wait
cp "$WORK/runs/det2/weights/best.pt" weights/vinbig_phantom_yolo11n.pt
cp "$WORK/runs/cls/weights/best.pt" weights/vinbig_phantom_cls.pt
echo "weights written: weights/vinbig_phantom_yolo11n.pt weights/vinbig_phantom_cls.pt"
