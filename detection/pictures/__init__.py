"""Boxes over X-rays: draw, show (visualize), the explorer (explore + explore.html), the HTML evaluation report (report_eval).

May import: data_prep, detection.evaluation, detection.competition, detection.pacs (SR links).
"""

__all__ = ['draw', 'explore', 'report_eval', 'visualize']
