"""The inbox's messages and artifacts, and memories."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from telecoder.domain.sessions import iso

# --- the inbox -----------------------------------------------------------------------------------


class MessageKind(enum.StrEnum):
    MESSAGE = "message"  # a note or a piece of work for an agent (``inbox send``)
    REPLY = "reply"  # an answer to a message (``inbox reply``)
    QUESTION = "question"  # a worker asks its leader (``orch blocked``; an agent in a sandbox)
    ANSWER = "answer"  # the leader's answer to a question (``orch answer``)


class MessageStatus(enum.StrEnum):
    OPEN = "open"  # nobody holds it (a claim that expired comes back here)
    CLAIMED = "claimed"  # an agent holds a lease on it
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (MessageStatus.DONE, MessageStatus.FAILED, MessageStatus.CANCELLED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """A file sent with a message, stored whole with its SHA-256."""

    name: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    id: int
    thread: str
    kind: MessageKind
    sender: str
    recipient: str | None  # None: to the thread, whoever reads it
    body: str
    reply_to: int | None
    status: MessageStatus  # as of ``now`` when read: an expired claim reads ``open``
    claimed_by: str | None
    lease_until: float | None
    progress: str | None  # the holder's last ``update``
    note: str | None  # why it was done, failed or cancelled
    artifacts: tuple[Artifact, ...]
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "thread": self.thread,
            "kind": self.kind.value,
            "from": self.sender,
            "to": self.recipient,
            "body": self.body,
            "reply_to": self.reply_to,
            "status": self.status.value,
            "claimed_by": self.claimed_by,
            "lease_until": iso(self.lease_until),
            "progress": self.progress,
            "note": self.note,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class MemoryKind(enum.StrEnum):
    """What a memory is: the summary of a finished session, a lesson, a user's fact or
    preference (chat channels), or a note someone added by hand."""

    SESSION = "session"
    LESSON = "lesson"
    FACT = "fact"
    NOTE = "note"


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """What TeleCoder remembers: of a repository (``repo``, as sessions name it) or of a user
    (``user``: ``channel:id``, a chat channel's person). Text is masked before it is stored."""

    id: int
    repo: str | None
    user: str | None
    kind: MemoryKind
    text: str
    prompt: str | None  # the session's task, for a session summary
    outcome: str | None  # how that session ended (succeeded, failed, ...)
    files: tuple[str, ...]  # the files it touched
    session_id: str | None  # the session it came from
    embedder: str | None  # which model embedded it (None: no vector; full-text only)
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repo": self.repo,
            "user": self.user,
            "kind": self.kind.value,
            "text": self.text,
            "prompt": self.prompt,
            "outcome": self.outcome,
            "files": list(self.files),
            "session_id": self.session_id,
            "embedder": self.embedder,
            "created_at": iso(self.created_at),
        }
