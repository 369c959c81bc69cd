"""The stages that run models: train (detectors, via detection.models' families), classifier (train-cls), epoch_score (the competition metric per epoch), predict (inference only: raw box tables + probabilities; predict_models, predict_cluster for Dask), classify, export (ONNX).

May import: data_prep, detection.models, detection.evaluation, detection.competition (postprocess: the one post-processing path) and detection.pacs (DICOMweb sources).
"""

__all__ = ['classifier', 'classify', 'epoch_score', 'export', 'predict', 'predict_cluster', 'predict_models', 'train', 'train_tv']
