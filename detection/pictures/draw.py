"""Boxes and labels drawn onto a matplotlib axes holding one X-ray: the conventions every
picture of the project shares (``cxrdet show``, the evaluation report's overlays and galleries,
the demo's pictures; :mod:`detection.pictures.visualize` composes the figures and writes the files).

Axes data units are the displayed image's own pixels; boxes arrive in ORIGINAL pixels (the box
table) and are mapped into the displayed frame with :func:`data_prep.core.boxes.to_frame`.

* one fixed colour per class id (:func:`data_prep.dicom.palette.class_color`, the project's one
  palette), across every picture, gallery, report plot and the explorer;
* truth: solid thick lines, labelled ``class`` (class-coloured text on black or white); truth
  boxes of different classes at the same place are inset one inside the other, so each stays
  visible;
* predictions: dashed in the class colour over a black line (so a prediction lying exactly on
  its truth box still shows, as colour / black dashes over the solid truth), labelled
  ``class conf`` (text on the class colour);
* labels never overlap each other and never leave the image: each takes the first free place
  of above / below / inside its box; one that finds none is dropped (truth first, then
  predictions by confidence) and counted in a ``+N labels`` note in the image's corner;
* raw radiologist boxes: thin, one dash pattern per radiologist, beside the fused (solid)
  truth box;
* the legend's entries (:func:`legend_handles`) and the height they need (:func:`legend_px`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from data_prep.core.boxes import Frame, to_frame
from data_prep.dicom.palette import class_color, class_rgb, text_color

DPI = 100
FONT = 8                      # points; at DPI 100 one point is 1.39 px
TRUTH_LW, PRED_LW, RATER_LW = 2.5, 2.0, 1.2       # points
PRED_DASH = (0, (5, 3))
RATER_STYLES = [(0, (1, 1)), (0, (4, 1, 1, 1)), (0, (6, 2)), (0, (2, 2, 6, 2)), (0, (1, 3))]


def _text_color(class_id: int) -> str:
    return text_color(class_rgb(class_id))


def names_dict(class_names) -> dict[int, str]:
    """Class names as {class_id: name}, from a dict or a list indexed by class id (None -> {})."""
    if class_names is None:
        return {}
    items = class_names.items() if isinstance(class_names, dict) else enumerate(class_names)
    return {int(k): str(v) for k, v in items}


def short_name(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[:n - 1] + "…"


COINCIDE_IOU = 0.8            # truth boxes overlapping this much are inset one inside the other
INSET_PX = 4                  # inset step (display px) between coincident truth boxes
LABEL_PAD = 1.0               # points of padding around a label's text


def _box_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _inset_coincident(xy: np.ndarray, step: float) -> np.ndarray:
    """Shrink the k-th of boxes that coincide (IoU >= :data:`COINCIDE_IOU` with an earlier one)
    by ``k * step`` on every side, so nested outlines stay apart."""
    out = xy.astype(float).copy()
    for i in range(len(xy)):
        k = sum(_box_iou(xy[i], xy[j]) >= COINCIDE_IOU for j in range(i))
        if k:
            d = min(k * step, (xy[i, 2] - xy[i, 0]) / 3, (xy[i, 3] - xy[i, 1]) / 3)
            out[i] += [d, d, -d, -d]
    return out


_RENDERER = None


def _text_px(text: str, fontsize: float) -> tuple[float, float]:
    """Width, height in output pixels of ``text`` at ``fontsize`` points, padding included
    (measured with the Agg renderer that draws it)."""
    global _RENDERER
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    if _RENDERER is None:
        _RENDERER = RendererAgg(8, 8, DPI)
    w, h, _ = _RENDERER.get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)
    pad = 2 * LABEL_PAD * DPI / 72
    return w + pad, max(h, fontsize * DPI / 72) + pad


class _Labels:
    """Labels of one image, placed without overlap inside ``[0, W) x [0, H)`` (data units;
    ``scale`` = output pixels per data unit)."""

    def __init__(self, ax, width: float, height: float, scale: float, fontsize: float):
        self.ax, self.W, self.H, self.scale, self.fs = ax, width, height, scale, fontsize
        self.items: list[tuple] = []
        self.placed: list[tuple[tuple, str, int]] = []      # (rect, text, class id)
        self.dropped = 0

    def add(self, priority: float, box, text: str, class_id: int, truth: bool = False) -> None:
        """Queue a label; truth labels are class-coloured text on black or white, prediction labels
        black or white text on the class colour (so the two read apart at a glance)."""
        self.items.append((priority, len(self.items), tuple(box), text, class_id, truth))

    def _fits(self, r) -> bool:
        return not any(r[0] < q[2] and q[0] < r[2] and r[1] < q[3] and q[1] < r[3] for q, *_ in self.placed)

    def draw(self) -> int:
        """Place every label (lowest priority value first), then a ``+N labels`` note in the
        bottom-right corner when some found no place (labels under the note give way to it, the
        last placed first); return N."""
        for _, _, (x0, y0, x1, y1), text, cid, truth in sorted(self.items):
            wpx, hpx = _text_px(text, self.fs)
            tw, th = wpx / self.scale, hpx / self.scale
            spot = None
            if tw <= self.W and th <= self.H:
                m = (TRUTH_LW * DPI / 72 / 2 + 0.5) / self.scale     # clear of the box's own line
                for lx, ly in ((x0 - m, y0 - m - th), (x1 + m - tw, y0 - m - th), (x0 - m, y1 + m),
                               (x1 + m - tw, y1 + m), (x0 + m, y0 + m), (x1 - m - tw, y0 + m),
                               (x0 + m, y1 - m - th), (x1 - m - tw, y1 - m - th)):
                    lx, ly = min(max(lx, 0.0), self.W - tw), min(max(ly, 0.0), self.H - th)
                    if self._fits((lx, ly, lx + tw, ly + th)):
                        spot = (lx, ly, lx + tw, ly + th)
                        break
            if spot is None:
                self.dropped += 1
            else:
                self.placed.append((spot, text, cid, truth))
        note = None
        while self.dropped:
            note_text = f"+{self.dropped} label{'s' if self.dropped > 1 else ''}"
            wpx, hpx = _text_px(note_text, self.fs)
            tw, th = min(wpx / self.scale, self.W), min(hpx / self.scale, self.H)
            corners = [(self.W - tw, self.H - th), (0.0, self.H - th), (0.0, 0.0), (self.W - tw, 0.0)]
            rects = [(x, y, x + tw, y + th) for x, y in corners]
            hits = [[k for k, (q, *_) in enumerate(self.placed)
                     if r[0] < q[2] and q[0] < r[2] and r[1] < q[3] and q[1] < r[3]] for r in rects]
            best = min(range(4), key=lambda c: len(hits[c]))
            note = rects[best]
            if not hits[best]:
                break
            del self.placed[hits[best][-1]]       # the lowest-priority label under the note gives way
            self.dropped += 1
        pad = LABEL_PAD * DPI / 72 / self.scale
        for (lx, ly, _, _), text, cid, truth in self.placed:   # clip_on: trims sub-pixel overhang only
            # truth: class-coloured text on black (light colours) or white (dark ones); predictions:
            # black or white text on the class colour
            fg, bg = (class_color(cid), _text_color(cid)) if truth else (_text_color(cid), class_color(cid))
            self.ax.text(lx + pad, ly + pad, text, color=fg, fontsize=self.fs, va="top", ha="left", clip_on=True,
                         bbox=dict(facecolor=bg, edgecolor="none", pad=LABEL_PAD, alpha=0.85 if truth else 1.0))
        if note is not None:
            self.ax.text(note[0] + pad, note[1] + pad, note_text, color="white", fontsize=self.fs, va="top",
                         ha="left", clip_on=True,
                         bbox=dict(facecolor="black", edgecolor="none", pad=LABEL_PAD, alpha=0.85))
        return self.dropped


def _draw(ax, boxes: pd.DataFrame, frame: Frame, linestyle, lw: float, kind: str | None = None,
          class_names: dict[int, str] | None = None, labels: _Labels | None = None, scale: float = 1.0) -> None:
    """Outline ``boxes``; ``kind`` "truth" insets coincident boxes, "pred" draws the dashes over a
    black line; with ``labels``, each box's label is queued there (truth: class; pred: class conf)."""
    if boxes is None or boxes.empty:
        return
    xy = to_frame(boxes[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), frame)
    if kind == "truth":
        xy = _inset_coincident(xy, INSET_PX / scale)
    names = names_dict(class_names)
    for (x0, y0, x1, y1), cid, cname, score in zip(xy, boxes["class_id"].astype(int), boxes["class_name"],
                                                   boxes["score"]):
        if kind == "pred":   # the black line shows in the dash gaps, over a truth box of the same colour
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="black",
                                   linewidth=lw, linestyle="-", antialiased=False))
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=class_color(cid),
                               linewidth=lw, linestyle=linestyle, antialiased=False))
        if labels is not None:
            name = short_name(str(names.get(cid, cname)))
            if kind == "pred":
                labels.add(2.0 - float(score), (x0, y0, x1, y1), f"{name} {score:.2f}", cid)
            else:
                labels.add(0.0, (x0, y0, x1, y1), name, cid, truth=True)


def draw_on_axes(ax, img: np.ndarray, frame: Frame, truth=None, pred=None, raters=None,
                 title: str | None = None, class_names: dict[int, str] | None = None,
                 exact: bool = True, fontsize: float = FONT, px: float | None = None) -> tuple[set[int], list[str]]:
    """Draw one image (uint8 ``(h, w)``) and its boxes on ``ax`` (data units = displayed pixels).

    ``truth``/``pred``/``raters``: box tables in ORIGINAL pixels, already restricted to this
    image (``raters``: raw per-radiologist boxes, column ``rater``). ``exact``: the axes has the
    image's shape, draw unresampled (single overlays); otherwise keep the aspect and smooth
    (gallery tiles, ``px`` output pixels on the longest side). Returns (class ids drawn,
    radiologist ids in their style order)."""
    rgb = np.repeat(np.asarray(img, dtype=np.uint8)[..., None], 3, axis=2)
    ax.imshow(rgb, interpolation="nearest" if exact else "antialiased",
              aspect="auto" if exact else "equal", extent=(0, img.shape[1], img.shape[0], 0))
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    ax.set_axis_off()
    scale = 1.0 if exact or not px else px / max(img.shape)
    labels = _Labels(ax, img.shape[1], img.shape[0], scale, fontsize)
    used: set[int] = set()
    rater_ids: list[str] = []
    if raters is not None and not raters.empty:
        from data_prep.report.dataset_report import natural_key

        groups = sorted(raters.groupby("rater", sort=False), key=lambda g: natural_key(g[0]))   # R2 before R10
        for i, (rid, grp) in enumerate(groups):
            _draw(ax, grp, frame, RATER_STYLES[i % len(RATER_STYLES)], RATER_LW, scale=scale)
            rater_ids.append(str(rid))
        used |= set(raters["class_id"].astype(int))
    if truth is not None and not truth.empty:
        _draw(ax, truth, frame, "-", TRUTH_LW, "truth", class_names, labels, scale)
        used |= set(truth["class_id"].astype(int))
    if pred is not None and not pred.empty:
        _draw(ax, pred, frame, PRED_DASH, PRED_LW, "pred", class_names, labels, scale)
        used |= set(pred["class_id"].astype(int))
    labels.draw()
    if title:
        ax.set_title(title, fontsize=fontsize, pad=3)
    return used, rater_ids


def legend_handles(used: set[int], class_names: dict[int, str], raters: list[str] | None,
                    has_pred: bool = True):
    h = [Line2D([], [], color=class_color(c), lw=4, label=f"{c} {short_name(class_names.get(c, ''), 24)}".strip())
         for c in sorted(used)]
    if not used:
        h.append(Line2D([], [], color="none", label="no boxes"))
    h += [Line2D([], [], color="black", lw=TRUTH_LW, ls="-", label="truth (solid)")]
    if has_pred:
        h.append(Line2D([], [], color="black", lw=PRED_LW, ls=PRED_DASH, label="prediction (dashed)"))
    for i, r in enumerate(raters or []):
        h.append(Line2D([], [], color="black", lw=RATER_LW, ls=RATER_STYLES[i % len(RATER_STYLES)],
                        label=f"radiologist {r}"))
    return h


def legend_px(n_entries: int, fontsize: float = FONT) -> int:
    """Height in px a legend of ``n_entries`` lines (plus a two-line title) needs."""
    line = fontsize * DPI / 72 * 1.55
    return int(np.ceil(line * (n_entries + 3) + 16))
