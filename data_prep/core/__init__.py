"""The foundations every stage stands on: the one config merge and its key rules (config, keys), the one writer of files and the output-is-not-an-input guard (atomic), one-line user errors (errors), the canonical box table and its conversions (boxes), the table contracts (tables), output sizes (sizes), Dask settings (cluster) where shipped files live (resources) and the prepared folder's layout (prepdir: PrepDir).

May import: data_prep.datasets (the dataset descriptions) and data_prep.labels.image_level (tables.read_truth fuses a raw per-radiologist file).
"""

__all__ = ['atomic', 'boxes', 'cluster', 'config', 'errors', 'keys', 'prepdir', 'resources', 'sizes', 'tables']
