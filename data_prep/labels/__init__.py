"""From radiologists' boxes to training labels: fusion (WBF and friends, wbf), radiologist subsets and variants (raters), folds, image-level label tables (image_level), YOLO/COCO export (export), extra datasets (extra).

May import: data_prep.core, data_prep.datasets, data_prep.dicom.read (PNG linking).
"""

__all__ = ['export', 'extra', 'folds', 'fusion', 'image_level', 'raters', 'wbf']
