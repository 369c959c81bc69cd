"""The loop from out-of-fold predictions to a Kaggle submission: postprocess (the ONE post-processing code path), tune, cv, submission (formats from the dataset descriptions; submission_numbers).

May import: data_prep, detection.evaluation, detection.engine, detection.models.
"""

__all__ = ['cv', 'fast_wbf', 'postprocess', 'submission', 'submission_numbers', 'tune']
