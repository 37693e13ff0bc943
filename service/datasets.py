"""Resolving the dataset a job names: ``name``, ``name@version`` or an id.

Built-in datasets get their row the first time a job names them, so the catalogue needs no seeding step.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.datasets import BUILTIN_DATASETS
from service.errors import InvalidInput
from service.tables import Dataset


def _known_names(session: Session) -> list[str]:
    return sorted(set(BUILTIN_DATASETS) | set(session.scalars(select(Dataset.name).distinct())))


def _builtin_row(session: Session, name: str) -> Dataset:
    row = session.scalar(select(Dataset).where(Dataset.name == name, Dataset.source == "builtin"))
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = Dataset(name=name, version=1, source="builtin", task="classification",
                          description=BUILTIN_DATASETS[name].description)
            session.add(row)
        return row
    except IntegrityError:  # another request registered it first
        return session.scalar(select(Dataset).where(Dataset.name == name, Dataset.source == "builtin"))


def resolve_dataset(session: Session, ref: str) -> Dataset:
    try:
        row = session.get(Dataset, uuid.UUID(ref))
        if row is not None:
            return row
    except ValueError:
        pass
    name, _, version = ref.partition("@")
    if version and not version.isdigit():
        raise InvalidInput(f"dataset {ref!r}: the part after '@' must be a version number, e.g. {name}@1",
                           details=[{"field": "dataset", "message": "bad version"}])
    query = select(Dataset).where(Dataset.name == name)
    query = query.where(Dataset.version == int(version)) if version else query.order_by(Dataset.version.desc())
    row = session.scalars(query.limit(1)).first()
    if row is None and name in BUILTIN_DATASETS and version in ("", "1"):
        row = _builtin_row(session, name)
    if row is None:
        raise InvalidInput(f"unknown dataset {ref!r}; valid names: {', '.join(_known_names(session))}",
                           details=[{"field": "dataset", "message": "unknown dataset"}])
    return row
