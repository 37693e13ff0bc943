"""Celery app and tasks: the only place that joins the database to ``models/``."""
