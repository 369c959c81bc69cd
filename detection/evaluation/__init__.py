"""Numbers: the competition metrics (metrics, stateless and checked against pycocotools), the metric registry and the one scoring function (scoring), per-image costs and image-level AUC (image_metrics), the evaluate and evaluate-cls stages (evaluate, evaluate_out, evaluate_cls), per-radiologist scoring and the human baseline (raters).

May import: data_prep, detection.competition (reading submissions).
"""

__all__ = ['evaluate', 'evaluate_cls', 'evaluate_out', 'image_metrics', 'metrics', 'raters', 'scoring']
