"""Synthetic DICOM phantoms in the competitions' layouts (synth) and the pixel phantoms they are drawn from (phantom).

May import: data_prep.core, data_prep.datasets, data_prep.dicom.read.
"""

__all__ = ['phantom', 'synth']
