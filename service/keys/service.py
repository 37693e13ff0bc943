"""API keys: made, listed, revoked, and looked up by their hash. A key is shown once, when it is made; only
its SHA-256 is stored, and it is never logged (its prefix and id are, to tell keys apart)."""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.http.errors import InvalidInput, NotFound
from service.http.pagination import newest_first
from service.platform.tables import ApiKey, utcnow

TOKEN_PREFIX = "tsk_"
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per key and process


class Scope(str, enum.Enum):
    """What a key may do. admin may do everything."""

    predict = "predict"  # /predict, /forecast, /v2 inference, and reading models
    train = "train"      # datasets and jobs
    read = "read"        # every GET
    admin = "admin"      # aliases, deletes, keys, the audit log


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Letters, digits and a little punctuation: a name is shown in lists, logs and the audit trail, so no
# control characters (a NUL, a newline that would forge a log line) and no markup.
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._@:+-]{0,99}$"


def create_key(session: Session, name: str, scopes: list[Scope], expires_at: datetime | None) -> tuple[ApiKey, str]:
    """A new key; returns its row and the key itself, which nothing else will ever show again."""
    if not name.strip():
        raise InvalidInput("name: give the key a name that says who uses it, e.g. web-app",
                           details=[{"field": "name", "message": "empty"}])
    if not re.fullmatch(KEY_NAME_PATTERN, name.strip()):
        raise InvalidInput(f"name: {name!r} is not a key name; use up to 100 letters, digits, spaces and . _ @ : + -, "
                           "starting with a letter or digit", details=[{"field": "name", "message": "bad characters"}])
    if not scopes:
        raise InvalidInput("scopes: name at least one of predict, train, read, admin",
                           details=[{"field": "scopes", "message": "empty"}])
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("expires_at: that moment has passed; give a time in the future, or none",
                           details=[{"field": "expires_at", "message": "in the past"}])
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name.strip(), prefix=token[:12], sha256=digest(token),
                 scopes=sorted({Scope(s).value for s in scopes}), expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, token


def list_keys(session: Session, limit: int, offset: int) -> tuple[list[ApiKey], int]:
    return newest_first(session, select(ApiKey), ApiKey, limit, offset)


def get_key(session: Session, key_id: uuid.UUID) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}; `GET /v1/keys` or `trainserve keys list` lists them")
    return row


def revoke_key(session: Session, key_id: uuid.UUID) -> ApiKey:
    row = get_key(session, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


def find_key(session: Session, sha256: str, now: datetime) -> ApiKey | None:
    """The key with this hash, with its use recorded (at most once a minute)."""
    row = session.scalar(select(ApiKey).where(ApiKey.sha256 == sha256))
    if row is not None and (row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY):
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        row.last_used_at = now
    return row
