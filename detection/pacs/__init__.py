"""Predictions where radiologists look: DICOM SR / GSPS export (export_sr) and DICOMweb (dicomweb).

May import: data_prep.
"""

__all__ = ['dicomweb', 'export_sr']
