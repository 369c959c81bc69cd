"""The one prediction settings object, :class:`PredictSettings`: what predict, classify, cv and
the per-epoch score are tuned by (field names are the config keys). Imports data_prep only."""
from __future__ import annotations

from dataclasses import dataclass

from data_prep.core.config import StageSettings
from data_prep.datasets import describe


@dataclass(frozen=True)
class PredictSettings(StageSettings):
    """What :func:`detection.engine.predict.predict` (and ``classify``, cv's predictions, the
    per-epoch score) is tuned by; field names are the config keys (configs/default.yaml):
    ``PredictSettings.from_config(cfg, **changes)``, ``settings.replace(**changes)``.
    ``normal``: (class_id, name) of the dataset's normal class for the 2-class filter, or None;
    ``voi``: :class:`data_prep.dicom.voi.VoiOptions`; ``post``: the post-processing keys."""
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

    @classmethod
    def derived(cls, cfg: dict) -> dict:
        """What the class makes of a merged config beyond its keys: ``imgsz`` only when asked for
        (else each checkpoint's training size), the dataset's normal class, the DICOM rendering
        (checked here, before any image), every post-processing key (``post``: the config)."""
        from data_prep.dicom.voi import VoiOptions

        asked = cfg.get("_sources", {}).get("imgsz") not in (None, "dataset config")
        return {"imgsz": int(cfg["imgsz"]) if asked else None, "normal": describe(cfg).normal,
                "voi": VoiOptions.from_config(cfg), "post": dict(cfg), "scheduler": cfg.get("scheduler")}
