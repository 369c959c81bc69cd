"""The project's one qualitative palette: a fixed colour per class id, shared by the box overlays
(detection/pictures/draw.py), the HTML explorer (detection/pictures/explore.py) and the dataset report's plots
(data_prep/report/plots.py), so a class has the same colour in every picture.

15 colours chosen to stay apart from each other AND from the grey of an X-ray: saturated hues
at different lightness (no pastels, which read as near-white on a radiograph and as each other:
the earlier pink / lavender / mint trio), hue families split by lightness where they must share
(teal 11 vs aquamarine 10, brown 9 vs olive 12). Index 14 (VinBigData's normal class, never
drawn as a box) is the one grey. Beyond 15 classes the palette cycles."""
from __future__ import annotations

PALETTE = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#fe01b1",
    "#bfef45", "#9a6324", "#2afeb7", "#008080", "#808000", "#dd85d7", "#a9a9a9",
)


def class_color(class_id: int) -> str:
    """The fixed hex colour of a class id (cycled beyond 15 classes)."""
    return PALETTE[int(class_id) % len(PALETTE)]


def class_rgb(class_id: int) -> tuple[int, int, int]:
    """:func:`class_color` as an (R, G, B) uint8 triple."""
    h = class_color(class_id).lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))


def text_color(rgb: tuple) -> str:
    """``"black"`` or ``"white"``: whichever reads better on a background of ``rgb`` (0-255 or 0-1
    floats), by the background's luma (ITU-R BT.601 weights)."""
    r, g, b = (float(v) * (255 if max(rgb[:3]) <= 1 and not isinstance(rgb[0], int) else 1) for v in rgb[:3])
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "white"
