"""The markdown + PNG report of an annotation file (dataset_report, plots).

May import: data_prep.core, data_prep.datasets, data_prep.dicom.read, data_prep.labels.image_level.
"""

__all__ = ['dataset_report', 'plots']
