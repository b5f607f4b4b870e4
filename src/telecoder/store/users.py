"""Users and their API tokens.

A user has a role: ``admin`` (everything), ``member`` (their own sessions), ``viewer`` (reads
only). A token belongs to a user and acts with the user's role, unless it is a ``worker`` token
(the worker endpoints only; it may belong to no one). A token is shown once, when it is made:
only its SHA-256 digest is stored, so the database never holds one that works.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, insert, or_, select, update

from telecoder.errors import BadInput, Conflict, UserNotFound
from telecoder.store.db import Database
from telecoder.store.schema import api_tokens, users

ROLES = ("admin", "member", "viewer")
TOKEN_ROLES = ("worker",)  # what a token may narrow its user's role to
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOKEN_PREFIX = "tc_"


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_role(role: str, allowed: tuple[str, ...] = ROLES) -> str:
    if role not in allowed:
        raise BadInput(f"unknown role {role!r}: one of {', '.join(allowed)}")
    return role


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    name: str
    role: str
    created_at: float
    disabled: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "disabled": self.disabled,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRow:
    """A token as listed: never the token itself, nor its digest."""

    id: int
    user: str | None
    role: str | None
    label: str | None
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    worker_id: str | None = None  # a worker token's worker, once it signed in

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "role": self.role,
            "label": self.label,
            "worker_id": self.worker_id,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """Who a valid token acts for: its user (None for an unowned worker token) and role."""

    token_id: int
    user: str | None
    role: str
    digest: str
    last_used_at: float | None
    worker_id: str | None = None  # a worker token's worker, once it signed in

    @property
    def name(self) -> str:
        return self.user or f"worker-{self.token_id}"


def _user(row: Row[Any]) -> User:
    m = row._mapping
    return User(
        name=m["name"], role=m["role"], created_at=m["created_at"], disabled=bool(m["disabled"])
    )


def _token(row: Row[Any]) -> TokenRow:
    m = row._mapping
    return TokenRow(
        id=m["id"],
        user=m["user"],
        role=m["role"],
        label=m["label"],
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        revoked_at=m["revoked_at"],
        worker_id=m["worker_id"],
    )


class Users:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- users -----------------------------------------------------------------------------

    async def add(self, name: str, role: str) -> User:
        if not NAME.match(name):
            raise BadInput(f"invalid user name {name!r}: letters, digits, '-' and '_', at most 64")
        check_role(role)
        async with self._db.write() as conn:
            found = (await conn.execute(select(users.c.name).where(users.c.name == name))).first()
            if found is not None:
                raise Conflict(f"user {name!r} exists: `telecoder users set-role {name} ROLE`")
            await conn.execute(
                insert(users).values(name=name, role=role, created_at=time.time(), disabled=False)
            )
        return await self.get(name)

    async def get(self, name: str) -> User:
        async with self._db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.name == name))).first()
        if row is None:
            raise UserNotFound(f"no user {name!r}")
        return _user(row)

    async def list(self) -> builtins.list[User]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(users).order_by(users.c.name))).all()
        return [_user(r) for r in rows]

    async def set_role(self, name: str, role: str) -> User:
        check_role(role)
        await self._set(name, role=role)
        return await self.get(name)

    async def disable(self, name: str) -> User:
        """A disabled user's tokens and dashboard logins stop working at once."""
        await self._set(name, disabled=True)
        return await self.get(name)

    async def _set(self, name: str, **values: Any) -> None:
        async with self._db.write() as conn:
            done = await conn.execute(update(users).where(users.c.name == name).values(**values))
        if not done.rowcount:
            raise UserNotFound(f"no user {name!r}")

    # --- tokens ----------------------------------------------------------------------------

    async def create_token(
        self, user: str | None, *, role: str | None = None, label: str | None = None
    ) -> tuple[TokenRow, str]:
        """A new token for ``user`` (and its row); the token is not kept anywhere."""
        if role is not None:
            check_role(role, TOKEN_ROLES)
        if user is None and role != "worker":
            raise BadInput("a token belongs to a user: give --user NAME (or --role worker)")
        if user is not None and (await self.get(user)).disabled:
            raise BadInput(f"user {user!r} is disabled")
        token = new_token()
        values = {
            "user": user,
            "role": role,
            "digest": digest_of(token),
            "label": label,
            "created_at": time.time(),
        }
        async with self._db.write() as conn:
            done = await conn.execute(insert(api_tokens).values(**values))
            token_id = done.inserted_primary_key[0] if done.inserted_primary_key else None
        assert token_id is not None
        return await self.token(int(token_id)), token

    async def token(self, token_id: int) -> TokenRow:
        async with self._db.read() as conn:
            query = select(api_tokens).where(api_tokens.c.id == token_id)
            row = (await conn.execute(query)).first()
        if row is None:
            raise UserNotFound(f"no token {token_id}")
        return _token(row)

    async def tokens(self) -> builtins.list[TokenRow]:
        async with self._db.read() as conn:
            rows = (await conn.execute(select(api_tokens).order_by(api_tokens.c.id))).all()
        return [_token(r) for r in rows]

    async def has_tokens(self) -> bool:
        """Whether any token is live (not revoked): then the server needs one."""
        query = select(api_tokens.c.id).where(api_tokens.c.revoked_at.is_(None)).limit(1)
        async with self._db.read() as conn:
            return (await conn.execute(query)).first() is not None

    async def revoke(self, token_id: int) -> TokenRow:
        async with self._db.write() as conn:
            await conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return await self.token(token_id)

    async def holder(
        self, *, digest: str | None = None, token_id: int | None = None
    ) -> Holder | None:
        """Who a live token (by its digest, or by id) acts for; None when there is no such
        token, it is revoked, or its user is disabled or gone."""
        query = select(
            api_tokens.c.id,
            api_tokens.c.user,
            api_tokens.c.role,
            api_tokens.c.digest,
            api_tokens.c.last_used_at,
            api_tokens.c.worker_id,
            users.c.role.label("user_role"),
            users.c.disabled,
        ).select_from(api_tokens.outerjoin(users, users.c.name == api_tokens.c.user))
        if digest is not None:
            query = query.where(api_tokens.c.digest == digest)
        elif token_id is not None:
            query = query.where(api_tokens.c.id == token_id)
        else:
            return None
        query = query.where(api_tokens.c.revoked_at.is_(None))
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        m = row._mapping
        if m["user"] is not None and (m["user_role"] is None or m["disabled"]):
            return None
        role = m["role"] or m["user_role"]
        if role is None:
            return None
        return Holder(
            token_id=m["id"],
            user=m["user"],
            role=role,
            digest=m["digest"],
            last_used_at=m["last_used_at"],
            worker_id=m["worker_id"],
        )

    async def bind_worker(self, token_id: int, worker_id: str) -> None:
        """Make the token ``worker_id``'s, on its first sign-in; raises Conflict when it is
        another worker's already."""
        async with self._db.write() as conn:
            bound = await conn.execute(
                update(api_tokens)
                .where(
                    api_tokens.c.id == token_id,
                    or_(api_tokens.c.worker_id.is_(None), api_tokens.c.worker_id == worker_id),
                )
                .values(worker_id=worker_id)
            )
            if bound.rowcount:
                return
            row = (
                await conn.execute(
                    select(api_tokens.c.worker_id).where(api_tokens.c.id == token_id)
                )
            ).first()
        owner = row[0] if row is not None else None
        raise Conflict(
            f"this worker token is worker {owner}'s; make another one for {worker_id} "
            "(telecoder tokens create --role worker)"
        )

    async def touch(self, token_id: int, when: float | None = None) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id)
                .values(last_used_at=when or time.time())
            )
