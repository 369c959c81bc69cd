"""The one prediction settings object, :class:`PredictSettings`: what predict, classify, cv and
the per-epoch score are tuned by (field names are the config keys). Imports data_prep only."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from data_prep.datasets import describe


@dataclass(frozen=True)
class PredictSettings:
    """What :func:`predict` is tuned by; field names are the config keys (configs/default.yaml).
    ``normal``: (class_id, name) of the dataset's normal class for the 2-class filter, or None."""
    tta: bool = False
    conf: float = 0.001
    nms_iou: float = 0.5
    max_det: int = 300
    imgsz: int | None = None  # None: each checkpoint's training size (logged)
    batch: int = 16
    device: str = "auto"
    ens_iou: float = 0.55
    ens_skip: float = 0.0001
    cls_imgsz: int = 256
    cls_low: float = 0.08
    cls_high: float = 0.95
    size: int = 512
    keep_ratio: bool = False
    normal: tuple[int, str] | None = None  # the dataset's (from_config: describe(cfg).normal); None: no normal rows
    voi: object = None  # data_prep.dicom.voi.VoiOptions for DICOMs (None: the config defaults)
    post: dict | None = None  # post-processing keys (detection.competition.postprocess), e.g. the merged config
    scheduler: str | None = None  # null | local | tcp://host:port (data_prep.core.cluster)
    workers: int = 2  # LocalCluster processes for scheduler=local

    # the keyword names predict() took before the settings object (kept for one release)
    _OLD = {"low": "cls_low", "high": "cls_high", "normal_class": "normal", "voi_options": "voi"}

    @classmethod
    def from_config(cls, cfg: dict, **changes) -> "PredictSettings":
        """The settings of a merged config (:func:`data_prep.core.config.load_config`); the normal
        class from its dataset's description; ``changes`` override fields."""
        from data_prep.dicom.voi import VoiOptions

        names = [f.name for f in fields(cls) if f.name not in ("normal", "voi", "post", "scheduler", "imgsz")]
        kw = {k: type(getattr(cls, k))(cfg[k]) for k in names if k in cfg}
        if cfg.get("_sources", {}).get("imgsz") not in (None, "dataset config"):  # asked for: else the checkpoint's
            kw["imgsz"] = int(cfg["imgsz"])
        return cls(**kw, normal=describe(cfg).normal, voi=VoiOptions.from_config(cfg), post=dict(cfg),
                   scheduler=cfg.get("scheduler")).replace(**changes)

    def replace(self, **changes) -> "PredictSettings":
        """A copy with ``changes`` (field names, or the old keyword names ``low``/``high``/``normal_class``)."""
        changes = {self._OLD.get(k, k): v for k, v in changes.items()}
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"predict: unknown setting(s) {unknown}; expected {[f.name for f in fields(self)]}")
        return dataclasses.replace(self, **changes)
