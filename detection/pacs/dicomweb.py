"""DICOMweb (a PACS such as Orthanc or dcm4chee): one client, credentials from the environment only.

A source or a target written ``dicomweb:URL`` is a DICOMweb service: ``URL`` is its root (QIDO-RS,
WADO-RS and STOW-RS below it), e.g. Orthanc's ``http://127.0.0.1:8042/dicom-web``. The HTTP work is
dicomweb-client's (``DICOMwebClient``): search (QIDO-RS), retrieve (WADO-RS), store (STOW-RS).

Credentials come from the environment variable ``CXRDET_DICOMWEB_AUTH`` and nowhere else:
``user:password`` (HTTP basic auth) or ``Bearer TOKEN`` (an ``Authorization`` header). No flag takes
them (a command line lands in shell histories and process lists), a URL holding ``user:password@`` is
refused for the same reason, and no message or log line of this module holds them: errors name the
URL (which never carries them) and the HTTP status.

:func:`fetch` materialises a server's image instances into a folder (``<SOPInstanceUID>.dcm``, written
through :mod:`data_prep.core.atomic`), so that ``predict`` and ``export-sr`` read them with the folder code
path; Structured Reports and presentation states on the server are left there (they are not images).
"""
from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

AUTH_ENV = "CXRDET_DICOMWEB_AUTH"
PREFIX = "dicomweb:"
# SOP classes that are not images (SR documents, presentation states, key object selections): never fetched
NOT_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.")
SOP_CLASS, SOP_INSTANCE, SERIES, STUDY = "00080016", "00080018", "0020000E", "0020000D"


def is_dicomweb(source) -> bool:
    """Whether ``source`` names a DICOMweb service (``dicomweb:URL``)."""
    return isinstance(source, str) and source.startswith(PREFIX)


def service_url(source: str, what: str = "--source") -> str:
    """The URL of ``dicomweb:URL`` (or of a bare ``http(s)://`` URL), checked: http or https, a host,
    and no credentials in it (they belong in ``CXRDET_DICOMWEB_AUTH``)."""
    from data_prep.core.errors import InputError

    url = source[len(PREFIX):] if source.startswith(PREFIX) else source
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{what} {source}", "is not a DICOMweb URL; expected dicomweb:http(s)://HOST[:PORT]/ROOT")
    if parts.username is not None or parts.password is not None:
        shown = url.replace(parts.netloc, parts.netloc.rsplit("@", 1)[-1])
        raise InputError(f"{what} {PREFIX}{shown}", f"holds credentials; expected them in the environment "
                         f"variable {AUTH_ENV} (user:password or 'Bearer TOKEN'), never on the command line")
    return url.rstrip("/")


def client(url: str):
    """A ``dicomweb_client.DICOMwebClient`` for ``url`` with the credentials of ``CXRDET_DICOMWEB_AUTH``."""
    from dicomweb_client import DICOMwebClient
    from dicomweb_client.session_utils import create_session

    from data_prep.core.errors import InputError

    session = create_session()
    secret = os.environ.get(AUTH_ENV, "")
    if secret:
        if secret.lower().startswith("bearer "):
            session.auth = _Bearer(secret.split(None, 1)[1].strip())
        elif ":" in secret:
            user, password = secret.split(":", 1)
            session.auth = (user, password)
        else:  # never quote the value: it is a secret
            raise InputError(AUTH_ENV, "is set but is neither 'user:password' nor 'Bearer TOKEN'")
    return DICOMwebClient(url, session=session)


class _Bearer:
    """``Authorization: Bearer TOKEN`` added by the session to each request (a requests auth callable),
    not passed as client headers: dicomweb-client logs its own headers at DEBUG level."""

    def __init__(self, token: str):
        self._token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_Bearer(***)"


def _failure(url: str, e: Exception, doing: str):
    """One project error for a failed request, naming the URL and the HTTP status, never a credential."""
    import requests

    from data_prep.core.errors import InputError

    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        why = (f"HTTP {status}: the server refused the credentials; set {AUTH_ENV} (user:password or "
               "'Bearer TOKEN') to an account allowed to do this")
    elif status is not None:
        why = f"HTTP {status}; expected a DICOMweb service that accepts this request"
    elif isinstance(e, requests.ConnectionError):
        why = "cannot connect; expected a running DICOMweb service at this URL"
    else:
        why = f"{type(e).__name__}; expected a DICOMweb service at this URL"
    return InputError(f"{PREFIX}{url}", f"{doing} failed ({why})")


def _tag(item: dict, tag: str) -> str | None:
    v = item.get(tag, {}).get("Value")
    return str(v[0]) if v else None


def search_instances(url: str, studies: Iterable[str] | None = None, dw=None) -> list[dict]:
    """QIDO-RS: ``[{study, series, sop, sop_class}]`` of every instance of ``studies`` (all studies when None)."""
    import requests

    dw = dw or client(url)
    try:
        if not studies:
            studies = [s for s in (_tag(x, STUDY) for x in dw.search_for_studies()) if s]
        out = []
        for study in studies:
            for x in dw.search_for_instances(study_instance_uid=study):
                out.append({"study": _tag(x, STUDY) or study, "series": _tag(x, SERIES), "sop": _tag(x, SOP_INSTANCE),
                            "sop_class": _tag(x, SOP_CLASS) or ""})
    except requests.RequestException as e:
        raise _failure(url, e, "searching (QIDO-RS)") from None
    return out


def fetch(url: str, folder: str | os.PathLike, studies: Iterable[str] | None = None) -> list[Path]:
    """WADO-RS: every IMAGE instance of ``studies`` (all studies when None) into ``folder`` as
    ``<SOPInstanceUID>.dcm``; returns the paths. SR documents and presentation states are skipped."""
    import requests

    from data_prep.core.atomic import atomic_path, safe_name
    from data_prep.core.errors import InputError

    dw = client(url)
    found = search_instances(url, studies, dw)
    images = [i for i in found if i["sop"] and not i["sop_class"].startswith(NOT_IMAGE_SOP_PREFIXES)]
    if not images:
        raise InputError(f"{PREFIX}{url}", f"no image instance found (studies: {list(studies) if studies else 'all'}); "
                                           "expected at least one image to read")
    paths = []
    for i in images:
        try:
            ds = dw.retrieve_instance(i["study"], i["series"], i["sop"])
        except requests.RequestException as e:
            raise _failure(url, e, f"retrieving instance {i['sop']} (WADO-RS)") from None
        path = Path(folder) / f"{safe_name(i['sop'])}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    log.info("fetched %d image instance(s) from %s%s (%d non-image instance(s) left there)", len(paths), PREFIX, url,
             len(found) - len(images))
    return paths


@contextmanager
def local_source(source, studies: Iterable[str] | None = None, what: str = "--source") -> Iterator:
    """``source`` as a local folder for the block: a folder as it is; ``dicomweb:URL`` fetched (:func:`fetch`,
    ``studies`` or every study) into a temporary folder removed afterwards. ``studies`` without a
    ``dicomweb:`` source is an error."""
    from data_prep.core.errors import InputError

    if not is_dicomweb(source):
        if studies:
            raise InputError("--study", f"goes with {what} dicomweb:URL; expected no --study for a folder")
        yield source
        return
    url = service_url(source, what)
    with tempfile.TemporaryDirectory(prefix="cxrdet-dicomweb-") as tmp:
        fetch(url, tmp, studies)
        yield tmp


def store(url: str, paths: Iterable[str | os.PathLike], batch: int = 16) -> int:
    """STOW-RS: store the DICOM files ``paths`` on the server, ``batch`` per request; returns how many."""
    import pydicom
    import requests

    dw = client(url)
    paths = [Path(p) for p in paths]
    for start in range(0, len(paths), batch):
        datasets = [pydicom.dcmread(p) for p in paths[start:start + batch]]
        try:
            dw.store_instances(datasets)
        except requests.RequestException as e:
            raise _failure(url, e, f"storing {len(datasets)} instance(s) (STOW-RS)") from None
    return len(paths)
