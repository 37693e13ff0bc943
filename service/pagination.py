"""Newest-first pages of a query, with the total count."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")


def newest_first(session: Session, query: Select[tuple[T]], entity, limit: int, offset: int) -> tuple[list[T], int]:
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(entity.created_at.desc(), entity.id).limit(limit).offset(offset))
    return list(rows.unique()), total
