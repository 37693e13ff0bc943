"""trainserve's training library: datasets, architectures, optimizers, the training loop, export.

Plain PyTorch and NumPy only; nothing here knows about HTTP, Celery or the database, so it can be used
from a notebook: ``fit(build_model(...), ...)``.
"""
