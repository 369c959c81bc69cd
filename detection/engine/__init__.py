"""The stages that run models: train (detectors, via detection.models' families), classifier (train-cls), epoch_score (the competition metric per epoch), predict (inference only: raw box tables + probabilities), classify, export (ONNX). Their arrows point one way, lowest first: runs (model specs, run folders, their lock), settings (PredictSettings, the one prediction settings object), sources (the images a prediction reads), classifier, classify, export, predict_models (loading the models), predict_batch (one batch through loaded models), predict_cluster (the batches on Dask), predict, epoch_score, train_tv, train.

May import: data_prep, detection.models, detection.evaluation, detection.competition (postprocess: the one post-processing path) and detection.pacs (DICOMweb sources).
"""

__all__ = ['classifier', 'classify', 'epoch_score', 'export', 'predict', 'predict_batch', 'predict_cluster', 'predict_models',
           'runs', 'settings', 'sources', 'train', 'train_tv']
