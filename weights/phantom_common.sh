# Sourced by weights/train_*phantom.sh: their common preamble and the VinBigData label subset.
#   phantom_setup DEFAULT_WORK DEFAULT_N SHARED_DEFAULT [WORKDIR] [N]
#     cd to the repository root; set WORK, N, SHARED (env SHARED wins), PY, CX (env PY / CX win:
#     another python / cxrdet; default the project's .venv); YOLO_OFFLINE=1; mkdir WORK.
#   vinbig_subset SEED ABNORMAL_FRACTION [keep]
#     WORK/labels.csv + WORK/meta.csv: N images of the real VinBigData labels (SHARED) minus the
#     demo's embedded images (data_prep/data/: the demo never sees these phantoms), that fraction
#     abnormal, drawn with SEED; "keep": leave an existing WORK/labels.csv as it is.
set -euo pipefail

phantom_setup() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    WORK=${4:-$1}
    N=${5:-$2}
    SHARED=${SHARED:-$3}
    PY=${PY:-.venv/bin/python}
    CX=${CX:-.venv/bin/cxrdet}
    export YOLO_OFFLINE=1
    mkdir -p "$WORK"
}

vinbig_subset() {
    $PY - "$SHARED" "$WORK" "$N" "$1" "$2" "${3:-}" <<'PY'
import sys, numpy as np, pandas as pd
from pathlib import Path
shared, work, n, seed, frac, keep = (Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                     float(sys.argv[5]), sys.argv[6] == "keep")
if keep and (work / "labels.csv").is_file():
    sys.exit(0)
df = pd.read_csv(shared / "train.csv.gz")
meta = pd.read_csv(shared / "train_meta.csv.gz")
demo = set(pd.read_csv("data_prep/data/vinbigdata_subset_train.csv")["image_id"])
df = df[~df["image_id"].isin(demo)]
normal = df.groupby("image_id")["class_id"].apply(lambda s: (s == 14).all())
rng = np.random.default_rng(seed)
n_ab = int(round(frac * n))
ids = list(rng.choice(sorted(normal.index[~normal]), n_ab, replace=False)) + \
      list(rng.choice(sorted(normal.index[normal]), n - n_ab, replace=False))
df[df["image_id"].isin(ids)].to_csv(work / "labels.csv", index=False)
meta[meta["image_id"].isin(ids)].to_csv(work / "meta.csv", index=False)
print(f"{len(ids)} images ({n_ab} abnormal) -> {work}/labels.csv")
PY
}
