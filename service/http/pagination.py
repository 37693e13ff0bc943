"""Newest-first pages of a query, with the total count."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Query
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")
MAX_INT = 2**31 - 1  # the database's integer: larger offsets and versions are refused with a 422, not a 500
PageLimit = Annotated[int, Query(ge=1, le=200, description="How many to answer (at most 200).")]
PageOffset = Annotated[int, Query(ge=0, le=MAX_INT, description="How many to skip.")]


def newest_first(session: Session, query: Select[tuple[T]], entity, limit: int, offset: int) -> tuple[list[T], int]:
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(entity.created_at.desc(), entity.id).limit(limit).offset(offset))
    return list(rows.unique()), total
