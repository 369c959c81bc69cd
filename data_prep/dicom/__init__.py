"""One DICOM file to pixels per DICOM PS3.3 C.11 (read, attributes, voi, padding, palette, j2k) and folders of them to PNGs + meta.csv (convert, convert_worker).

May import: data_prep.core.
"""
import sys as _sys


def _import_pydicom_without_requests() -> None:
    """Import pydicom with ``requests`` hidden, unless either is already imported.

    pydicom's test-data downloader (``pydicom.data.download``, imported with pydicom) takes
    ``requests`` when it can, else the standard library's urllib; nothing here downloads, and
    ``requests`` (urllib3, its certificates, charset detection) is ~5 MB of every convert process
    and pool worker (issue 29 item 4: <= 150 MB per worker; bench/convert.py). A later
    ``import requests`` anywhere works as usual: only pydicom's downloader keeps urllib."""
    if "pydicom" in _sys.modules or "requests" in _sys.modules:
        return
    _sys.modules["requests"] = None     # `import requests` raises ImportError meanwhile
    try:
        import pydicom  # noqa: F401
    finally:
        if "requests" in _sys.modules and _sys.modules["requests"] is None:
            del _sys.modules["requests"]


_import_pydicom_without_requests()

__all__ = ['attributes', 'convert', 'convert_worker', 'fastlut', 'j2k', 'padding', 'palette', 'read', 'voi']
