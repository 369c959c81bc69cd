"""cxrdet's models, predictions, numbers, submissions and pictures (``cxrdet STAGE``: detection/cli.py)."""

__version__ = "0.1.0"
