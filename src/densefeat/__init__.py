"""densefeat: dense feature learning and embedding geometry for medical data."""

__version__ = "0.1.0"
