"""The grayscale transforms of DICOM PS3.3 C.11: Modality LUT (C.11.1) and VOI LUT (C.11.2).

Written here rather than taken from ``pydicom.pixels`` because three of pydicom 3.0's behaviours
give wrong pixels (compared with DCMTK and with the standard's formulas):

* ``apply_windowing`` scales its output by the stored-value range passed through the rescale, so
  a negative Rescale Slope flips the windowed image; C.11.2.1.2.1 maps the window to the output
  range whatever the slope's sign. Here a window maps to ``[0, 1]``.
* ``apply_voi`` indexes an 8-bit LUT with a uint8 array, so a LUT of more than 256 entries wraps
  around, and it cannot read 8-bit entries packed two per 16-bit word. :func:`read_lut` reads
  both layouts and indexes in int64.
* A Window Width below 1 (LINEAR) or 0 (LINEAR_EXACT, SIGMOID) raises, losing the image.
  :func:`choose_voi` skips such a view and falls back to the next usable one (another window, a
  VOI LUT) or to no VOI, and says why.

Which view is used is the user's choice (C.11.2 leaves it open): :class:`VoiOptions` (config keys
``voi``, ``window_index``, ``stretch``; see ``configs/default.yaml``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydicom.multival import MultiValue

VOI_MODES = ("auto", "window", "lut", "none")
STRETCH_MODES = ("minmax", "window")
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass(frozen=True)
class VoiOptions:
    """What to apply after the modality transform.

    ``voi``: ``auto`` (VOI LUT if the file has one, else window, else none), ``window`` (a window
    first, then a VOI LUT), ``lut`` (same order as auto), ``none`` (no VOI: min-max).
    ``window_index``: which of several windows (and of several VOI LUTs) is tried first.
    ``stretch``: ``minmax`` stretches the image's own range after the VOI to 0-255 (the Kaggle
    convention); ``window`` maps the VOI output range (a window's ends, a LUT's 0..2**n-1) to
    0 and 255, as a DICOM viewer shows it. Without a VOI, ``window`` falls back to min-max.
    ``padding``: pixel padding (PS3.3 C.7.5.1.1.2, :mod:`data_prep.dicom.padding`) left out of the
    range and drawn black; False treats padding pixels as image."""
    voi: str = "auto"
    window_index: int = 0
    stretch: str = "minmax"
    padding: bool = True

    def __post_init__(self):  # pragma: no mutate block, config check
        if self.voi not in VOI_MODES:
            raise ValueError(f"config key voi = {self.voi!r}: expected one of {' | '.join(VOI_MODES)}")
        if isinstance(self.window_index, bool) or not isinstance(self.window_index, int) or self.window_index < 0:
            raise ValueError(f"config key window_index = {self.window_index!r}: expected an integer >= 0")
        if self.stretch not in STRETCH_MODES:
            raise ValueError(f"config key stretch = {self.stretch!r}: expected one of {' | '.join(STRETCH_MODES)}")
        if not isinstance(self.padding, bool):
            raise ValueError(f"config key padding = {self.padding!r}: expected true or false")

    @classmethod
    def from_config(cls, cfg: dict | None) -> "VoiOptions":  # pragma: no mutate block, config
        cfg = cfg or {}
        return cls(cfg.get("voi", "auto"), cfg.get("window_index", 0), cfg.get("stretch", "minmax"),
                   cfg.get("padding", True))

    def tag(self) -> str:  # pragma: no mutate block, meta.csv string
        """``"voi=auto;window_index=0;stretch=minmax;padding=true"``: recorded in meta.csv, compared
        on resume (images converted before ``padding`` existed have no ``padding=`` and are redone)."""
        return (f"voi={self.voi};window_index={self.window_index};stretch={self.stretch};"
                f"padding={str(self.padding).lower()}")


# ----------------------------------------------------------------------------- LUTs (C.11.1.1, C.11.2.1.1)
@dataclass(frozen=True)
class Lut:
    """A LUT: input ``first`` maps to ``entries[0]``; inputs below/above clamp to the ends."""
    first: int
    entries: np.ndarray          # int64, one per entry
    bits: int                    # bits per entry: output range 0 .. 2**bits - 1

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind == "f":
            x = np.rint(x)       # a LUT is indexed by integer values (the modality step may give floats)
        idx = np.clip(x.astype(np.int64) - self.first, 0, len(self.entries) - 1)
        return self.entries[idx]


def _little_endian(ds) -> bool:
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is not None and tsyntax.is_transfer_syntax:
        return bool(tsyntax.is_little_endian)
    enc = ds.original_encoding              # (implicit VR, little endian) as read; (None, None) if built
    return enc[1] is not False


def read_lut(item, ds, signed_input: bool = False) -> Lut:
    """A Modality or VOI LUT item -> :class:`Lut`; ``ValueError`` (a reason) when unusable.

    The descriptor is ``[entries (0 = 65536), first value mapped, bits per entry (8..16)]``. The
    data are 16-bit words (US or OW), one entry per word, or, for 8-bit entries, two entries
    packed per word (low byte first). A first value mapped of 32768 or more is read as signed
    when the input can be negative (``signed_input``: Pixel Representation for a Modality LUT,
    :func:`modality_output_signed` for a VOI LUT) and the descriptor was read as unsigned."""
    desc = item.get("LUTDescriptor")
    if desc is None or "LUTData" not in item:
        raise ValueError("LUT Descriptor or LUT Data missing")
    desc = list(desc) if isinstance(desc, (list, tuple, MultiValue)) else [desc]
    if len(desc) != 3:
        raise ValueError(f"LUT Descriptor {desc}: expected 3 values")
    n, first, bits = int(desc[0]) or 65536, int(desc[1]), int(desc[2])
    if signed_input and first >= 32768:
        first -= 65536
    if not 8 <= bits <= 16:
        raise ValueError(f"LUT Descriptor bits per entry {bits}: expected 8 to 16")
    value = item["LUTData"].value
    if value is None:                                 # an empty US/OW element read from a file
        value = b""
    if isinstance(value, (bytes, bytearray)):
        words = np.frombuffer(bytes(value[: len(value) // 2 * 2]), "<u2" if _little_endian(ds) else ">u2")
    else:
        seq = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
        words = np.asarray(seq, dtype=np.int64) & 0xFFFF
    words = words.astype(np.int64)
    if len(words) >= n:
        entries = words[:n]
    elif bits == 8 and 2 * len(words) >= n:          # 8-bit entries packed two per 16-bit word
        entries = np.stack([words & 0xFF, words >> 8], axis=1).ravel()[:n]
    else:
        raise ValueError(f"LUT Data holds {len(words)} 16-bit words; the LUT Descriptor says {n} "
                         f"entries of {bits} bits")
    return Lut(first, entries, bits)


def modality(values: np.ndarray, ds) -> np.ndarray:
    """C.11.1: the Modality LUT Sequence (first item) if present, else Rescale Slope/Intercept
    (when both are present; an empty one reads as 1 or 0, as :func:`modality_output_signed` reads
    it), else the values unchanged; float64 out."""
    seq = ds.get("ModalityLUTSequence")
    if seq:
        lut = read_lut(seq[0], ds, signed_input=int(ds.get("PixelRepresentation") or 0) == 1)
        return lut.apply(values).astype(np.float64)
    out = np.asarray(values, dtype=np.float64)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        out = out * _number(ds, "RescaleSlope", 1.0) + _number(ds, "RescaleIntercept", 0.0)
    return out


# ----------------------------------------------------------------------------- windows (C.11.2.1.2, C.11.2.1.3)
@dataclass(frozen=True)
class Window:
    """Window Center/Width with a VOI LUT Function, output in ``[0, 1]``."""
    center: float
    width: float
    function: str = "LINEAR"

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        c, w = self.center, self.width
        if self.function == "SIGMOID":                                   # C.11.2.1.3.1
            return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
        if self.function == "LINEAR":                                    # C.11.2.1.2.1
            c, w = c - 0.5, w - 1.0
        lo, hi = c - w / 2, c + w / 2                                    # LINEAR_EXACT: C.11.2.1.3.2
        mid = (x - c) / w + 0.5 if w > 0 else np.zeros_like(x)
        return np.where(x <= lo, 0.0, np.where(x > hi, 1.0, mid))

    def label(self) -> str:  # pragma: no mutate block, meta.csv string
        s = f"{self.center:g}|{self.width:g}"
        return s if self.function == "LINEAR" else f"{s}|{self.function}"


def _values(ds, key: str) -> list:
    v = ds.get(key)
    if v is None or v == "":
        return []
    return list(v) if isinstance(v, (list, tuple, MultiValue)) else [v]


def window_views(ds) -> list:  # pragma: no mutate block, view listing
    """One entry per window in the file: a :class:`Window`, or a reason string when unusable."""
    try:
        centers, widths = _values(ds, "WindowCenter"), _values(ds, "WindowWidth")
        function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    except Exception as e:  # an unparsable DS/CS value
        return [f"window: unreadable Window Center/Width ({type(e).__name__}: {e})"]
    out = []
    for i in range(max(len(centers), len(widths))):
        name = f"window {i}"
        if i >= len(centers) or i >= len(widths):
            out.append(f"{name}: Window Center has {len(centers)} value(s), Window Width {len(widths)}")
            continue
        try:
            c, w = float(centers[i]), float(widths[i])
        except (TypeError, ValueError):
            out.append(f"{name}: Window Center/Width {centers[i]!r}/{widths[i]!r} are not numbers")
            continue
        if not (math.isfinite(c) and math.isfinite(w)):
            out.append(f"{name}: Window Center/Width {c:g}/{w:g} not finite")
        elif function not in WINDOW_FUNCTIONS:
            out.append(f"{name}: VOI LUT Function {function!r} unknown; expected {', '.join(WINDOW_FUNCTIONS)}")
        elif function == "LINEAR" and w < 1:
            out.append(f"{name}: Window Width {w:g} < 1 (LINEAR needs >= 1, C.11.2.1.2.1)")
        elif w <= 0:
            out.append(f"{name}: Window Width {w:g} <= 0 ({function} needs > 0, C.11.2.1.3)")
        else:
            out.append(Window(c, w, function))
    return out


def lut_views(ds, signed_input: bool) -> list:  # pragma: no mutate block, view listing
    """One entry per VOI LUT Sequence item: a :class:`Lut`, or a reason string when unusable."""
    out = []
    for i, item in enumerate(ds.get("VOILUTSequence") or []):
        try:
            out.append(read_lut(item, ds, signed_input))
        except Exception as e:
            out.append(f"VOI LUT {i}: {e}")
    return out


# ----------------------------------------------------------------------------- the choice
@dataclass(frozen=True)
class Voi:
    """The VOI transform chosen for one file. ``kind`` window | lut | none; ``index`` the view's
    position in the file; ``fallback`` why an earlier choice was not used ("" when none);
    ``invalid`` whether a view in the file was skipped for an invalid value (worth a warning)."""
    kind: str = "none"
    window: Window | None = None
    lut: Lut | None = None
    index: int = 0
    fallback: str = ""
    invalid: bool = False

    @property
    def top(self) -> float | None:
        """Top of the output range (bottom 0): 1 for a window, 2**bits - 1 for a LUT."""
        if self.kind == "window":
            return 1.0
        if self.kind == "lut":
            return float(2 ** self.lut.bits - 1)
        return None

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "window":
            return self.window.apply(x)
        if self.kind == "lut":
            return self.lut.apply(x).astype(np.float64)
        return np.asarray(x, dtype=np.float64)

    def label(self) -> str:  # pragma: no mutate block, meta.csv string
        """For meta.csv's ``voi_window``: ``center|width[|FUNCTION]`` for a window, else ""."""
        return self.window.label() if self.kind == "window" else ""

    def describe(self) -> str:  # pragma: no mutate block, message
        if self.kind == "window":
            return f"window {self.index} ({self.window.label()})"
        if self.kind == "lut":
            return f"VOI LUT {self.index}"
        return "no VOI (min-max)"


def _number(ds, key: str, default: float) -> float:
    v = ds.get(key)
    return default if v is None or v == "" else float(v)


def stored_range(ds) -> tuple[int, int]:
    """The stored values Bits Stored and Pixel Representation allow: ``(0, 2**bits - 1)`` or
    ``(-2**(bits - 1), 2**(bits - 1) - 1)`` (Bits Stored absent: Bits Allocated, else 16)."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def modality_output_signed(ds) -> bool:
    """Whether the Modality LUT stage can output negative values: what C.11.2.1.1 reads a VOI LUT's
    first value mapped by (US when it cannot, SS when it can).

    * a Modality LUT Sequence: no (its output is unsigned, C.11.1.1.1), whatever the pixels;
    * Rescale Slope and Intercept: the sign of ``slope * v + intercept`` over the stored value
      range of :func:`stored_range` (slope -1, intercept 65535 on 16-bit unsigned data: 0..65535,
      unsigned; intercept -1024: signed);
    * neither: Pixel Representation (float pixel data: signed)."""
    if any(k in ds for k in ("FloatPixelData", "DoubleFloatPixelData")):
        return True
    if ds.get("ModalityLUTSequence"):
        return False
    lo, hi = stored_range(ds)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        try:
            slope, intercept = _number(ds, "RescaleSlope", 1.0), _number(ds, "RescaleIntercept", 0.0)
        except (TypeError, ValueError):
            return lo < 0
        return min(slope * lo + intercept, slope * hi + intercept) < 0
    return lo < 0


def choose_voi(ds, options: VoiOptions | None = None) -> Voi:
    """The VOI for ``ds`` under ``options`` (C.11.2 leaves the choice of view to the user).

    Order: ``window`` tries windows then VOI LUTs, ``auto``/``lut`` VOI LUTs then windows; within
    a kind, ``window_index`` first, then the others in file order. Unusable views (Window Width
    0, unknown function, a LUT whose data do not match its descriptor) are skipped; if none is
    usable, no VOI. Non-monochrome images get no VOI."""
    options = options or VoiOptions()
    if options.voi == "none":
        return Voi()
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")) not in ("MONOCHROME1", "MONOCHROME2"):
        return Voi()
    views = {"window": window_views(ds), "lut": lut_views(ds, modality_output_signed(ds))}
    order = ("window", "lut") if options.voi == "window" else ("lut", "window")
    notes: list[str] = []
    invalid = False
    for kind in order:
        cands = views[kind]
        name = "window" if kind == "window" else "VOI LUT"
        if not cands:
            if options.voi != "auto" and kind == order[0]:
                notes.append(f"no {name} in the file")
            continue
        k = options.window_index
        if k >= len(cands):
            notes.append(f"window_index {k}: the file has {len(cands)} {name}(s)")
            k = 0
        for i in [k] + [j for j in range(len(cands)) if j != k]:
            view = cands[i]
            if isinstance(view, str):
                notes.append(view)
                invalid = True
                continue
            return Voi(kind, view if kind == "window" else None, view if kind == "lut" else None,
                       i, "; ".join(notes), invalid)
    return Voi(fallback="; ".join(notes), invalid=invalid)


def flat_cause(a: np.ndarray, ds, voi: Voi) -> str:  # pragma: no mutate block, message
    """Why an image whose stored values differ came out constant: the step that maps them all to
    one value (the Modality LUT Sequence or rescale, or the VOI LUT or window, named with what it
    was given). ``a``: the stored values (gray). "" when the stored values are constant
    themselves or no single step is to blame."""
    if not a.size or a.min() == a.max():
        return ""
    values = np.unique(a)
    lo, hi = values[0], values[-1]
    m = modality(values, ds)
    if m.min() == m.max():
        if ds.get("ModalityLUTSequence"):
            step = "the Modality LUT Sequence"
        else:
            step = f"the rescale (slope {ds.get('RescaleSlope')}, intercept {ds.get('RescaleIntercept')})"
        return f"{step} maps every stored value ({lo:g}..{hi:g}) to {m[0]:g}"
    y = voi.apply(m)
    if y.min() != y.max():
        return ""
    span = f"every modality output value ({m.min():g}..{m.max():g})"
    if voi.kind == "lut":
        lut = voi.lut
        last = lut.first + len(lut.entries) - 1
        how = "signed (the modality output can be negative)" if lut.first < 0 else "unsigned"
        return (f"{voi.describe()} (first value mapped {lut.first}, read as {how} per PS3.3 C.11.2.1.1; "
                f"{len(lut.entries)} entries, inputs {lut.first}..{last}) maps {span} to one entry, "
                f"{y[0]:g}")
    if voi.kind == "window":
        return f"{voi.describe()} maps {span} to one end of the window ({y[0]:g})"
    return ""
