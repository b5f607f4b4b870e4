"""Atlassian Document Format (Jira Cloud's rich text): flattened to text, built from text.

``text`` reads any ADF node (or a plain string, as Jira Server and old payloads send) as plain
text: paragraphs and headings on their own lines, list items as ``- ``, mentions as their
``@name``, cards as their URL. ``document`` makes the ADF of a short markdown-like text:
paragraphs at blank lines, line breaks kept, ``**bold**``, `` `code` `` and URLs marked.
"""

from __future__ import annotations

import re
from typing import Any

_BLOCKS = frozenset({"paragraph", "heading", "codeBlock", "rule"})  # each ends a line
_INLINE = re.compile(r"\*\*(?P<bold>[^*\n]+)\*\*|`(?P<code>[^`\n]+)`|(?P<url>https?://[^\s)>\]]+)")


def text(node: Any) -> str:
    """The plain text of an ADF node (or of a string)."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node
    parts: list[str] = []
    _walk(node, parts)
    lines = "".join(parts).splitlines()
    return "\n".join(line.rstrip() for line in lines).strip()


def _walk(node: Any, out: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, out)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    attrs = node.get("attrs")
    attrs = attrs if isinstance(attrs, dict) else {}
    if kind == "text":
        out.append(str(node.get("text") or ""))
    elif kind == "hardBreak":
        out.append("\n")
    elif kind == "mention":
        out.append(str(attrs.get("text") or "@someone"))
    elif kind in ("inlineCard", "blockCard", "embedCard"):
        out.append(str(attrs.get("url") or ""))
    elif kind in ("emoji", "status"):
        out.append(str(attrs.get("text") or attrs.get("shortName") or ""))
    if kind == "listItem":
        out.append("- ")
    _walk(node.get("content"), out)
    if kind in _BLOCKS:
        out.append("\n")


def document(source: str) -> dict[str, Any]:
    """The ADF document of ``source``: one paragraph per block of lines."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", source.strip()):
        content: list[dict[str, Any]] = []
        for i, line in enumerate(block.splitlines()):
            if i:
                content.append({"type": "hardBreak"})
            content.extend(_inline(line))
        if content:
            paragraphs.append({"type": "paragraph", "content": content})
    return {"type": "doc", "version": 1, "content": paragraphs}


def _inline(line: str) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    at = 0
    for found in _INLINE.finditer(line):
        if found.start() > at:
            nodes.append({"type": "text", "text": line[at : found.start()]})
        if found.group("bold"):
            nodes.append(_marked(found.group("bold"), {"type": "strong"}))
        elif found.group("code"):
            nodes.append(_marked(found.group("code"), {"type": "code"}))
        else:
            url = found.group("url")
            nodes.append(_marked(url, {"type": "link", "attrs": {"href": url}}))
        at = found.end()
    if at < len(line):
        nodes.append({"type": "text", "text": line[at:]})
    return nodes


def _marked(value: str, mark: dict[str, Any]) -> dict[str, Any]:
    return {"type": "text", "text": value, "marks": [mark]}
