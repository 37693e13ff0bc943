"""Celery task entry points: each loads its row by id and calls ``service/``. Nothing else lives here."""
