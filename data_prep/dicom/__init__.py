"""One DICOM file to pixels per DICOM PS3.3 C.11 (read, attributes, voi, padding, palette, j2k) and folders of them to PNGs + meta.csv (convert, convert_worker).

May import: data_prep.core.
"""

__all__ = ['attributes', 'convert', 'convert_worker', 'fastlut', 'j2k', 'padding', 'palette', 'read', 'voi']
