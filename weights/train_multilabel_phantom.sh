#!/usr/bin/env bash
# Re-trains weights/vinbig_phantom_multilabel.pt (weights/README.md) from scratch, fully offline, on CPU.
# Usage: bash weights/train_multilabel_phantom.sh [WORKDIR] [N_IMAGES]   (needs ../shared/data/vinbigdata)
# CX / PY may point at another cxrdet / python (default: the project's .venv).
source "$(dirname "$0")/phantom_common.sh"
phantom_setup runs/multilabel_phantom 800 ../shared/data/vinbigdata "$@"
# 1. real labels minus the demo's embedded images (data_prep/data/: the demo never sees these
#    phantoms), 75 % abnormal, a seed of its own (2027) so the set differs from the detector's
vinbig_subset 2027 0.75 keep
# 2. phantoms at those real boxes (all go to train; the held-out set is fold 0 of prep's folds)
[ -f "$WORK/data/train.csv" ] || nice $CX synth vinbigdata "$WORK/data" --labels "$WORK/labels.csv" \
    --meta "$WORK/meta.csv" --n "$N" --n-test 0 --size 1024 --seed 12
# 3. PNGs (512 px, as the demo), fused boxes, patient-grouped folds; no YOLO/COCO export needed
nice $CX prep phantom_multilabel --data "$WORK/data" --out "$WORK/prep"
# 4. multi-label classifier on fold 0 (held out): 14 findings + abnormal, timm test_resnet from scratch at 160 px.
#    One torch thread: on a loaded 2-core machine it trains faster than two contending threads.
R="$WORK/runs"
[ -f "$R/ml/weights/best.pt" ] || OMP_NUM_THREADS=1 nice $CX train-cls phantom_multilabel --prep "$WORK/prep" \
    --fold 0 project="$R" name=ml
# 5. held-out numbers: classify every prepared PNG, score fold 0 (never trained on) against the lesions
#    the phantoms really have (data/train_truth.csv), then ship the best checkpoint
[ -f "$WORK/image_labels.csv" ] || $CX labels vinbigdata --labels "$WORK/data/train_truth.csv" --out "$WORK/image_labels.csv"
[ -f "$WORK/probs.csv" ] || nice $CX classify --weights "$R/ml/weights/best.pt" --source "$WORK/prep/images" \
    --out "$WORK/probs.csv"
$CX evaluate-cls --labels "$WORK/image_labels.csv" --probs "$WORK/probs.csv" --folds "$WORK/prep/folds.csv" \
    --fold 0 --json "$WORK/metrics_cls_fold0.json" --plots "$WORK/plots"
cp "$R/ml/weights/best.pt" weights/vinbig_phantom_multilabel.pt
echo "weights written: weights/vinbig_phantom_multilabel.pt (held-out fold 0: $WORK/metrics_cls_fold0.json)"
