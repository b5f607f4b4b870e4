"""A JSON answer from a model on any OpenAI-compatible endpoint, validated by a pydantic model.

Shared by the dispatcher (a decision), the goal planner (a plan) and whoever else asks a model
for a structured answer (a judge). ``JsonModel.ask`` posts ``{base_url}/chat/completions``
asking for ``response_format`` json_schema (strict); a server that refuses it with a 400 is asked
again with JSON-only instructions, and from then on without it. The reply is taken from a fence
or the outermost braces if need be and validated (``parse``); an invalid one is asked again once
with the error. What cannot be had raises: ``httpx.HTTPError`` for the wire, ``ValueError`` for
a reply that is not what was asked, twice (``InvalidReply``). Callers decide what a failure means.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

REASK = "That reply is not valid: {error}. Answer again."


class InvalidReply(ValueError):
    """The model's reply was not what was asked, twice; ``error`` says what was wrong last."""

    def __init__(self, error: str) -> None:
        super().__init__(f"the reply was invalid twice: {error}")
        self.error = error


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model`` as a strict JSON schema for its top level (every key required, none other
    allowed; defaults and titles dropped)."""
    full = model.model_json_schema()
    properties = {
        name: {k: v for k, v in prop.items() if k not in ("default", "title")}
        for name, prop in full["properties"].items()
    }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if "$defs" in full:
        schema["$defs"] = full["$defs"]
    return schema


def json_object(content: str) -> dict[str, Any]:
    """The JSON object in a model's reply: the JSON itself, a fenced block, or the outermost
    braces in prose. Raises ValueError saying what is wrong."""
    text = content.strip()
    fenced = _FENCE.search(text)
    if fenced is not None:
        text = fenced.group(1).strip()
    if not text.startswith("{"):
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            raise ValueError("it holds no JSON object")
        text = text[start : end + 1]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"it is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError("it is not a JSON object")
    return data


def parse(content: str, model: type[M]) -> M:
    """``model`` from a model's reply (see ``json_object``). Raises ValueError naming each
    problem."""
    data = json_object(content)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'the object'}: {err['msg']}"
            for err in e.errors()
        )
        raise ValueError(problems) from None


class JsonModel:
    """A model asked for JSON on ``POST {base_url}/chat/completions`` (see the module)."""

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        api_key: SecretStr | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self.timeout = timeout
        self.structured = True  # until the server refuses response_format

    async def ask(
        self,
        answer: type[M],
        *,
        system: str,
        user: str,
        json_only: str,
        name: str,
        schema: dict[str, Any] | None = None,
        reask: str = REASK,
    ) -> M:
        """``answer`` for the ``user`` message. ``json_only`` is the instruction added when the
        server cannot be asked for a schema (and on the second try); ``name`` names the schema;
        ``reask`` (with ``{error}``) asks again after an invalid reply."""
        messages = [{"role": "user", "content": user}]
        headers = {}
        if self._api_key is not None:
            headers["authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        shape = _Shape(system, json_only, name, schema or strict_schema(answer))
        async with httpx.AsyncClient(timeout=self.timeout, headers=headers) as client:
            content = await self._complete(client, shape, messages)
            try:
                return parse(content, answer)
            except ValueError as e:
                error = str(e)[:500]
            log.info("the %s reply was invalid (%s): asking again", name, error)
            messages += [
                {"role": "assistant", "content": content[:4000]},
                {"role": "user", "content": f"{reask.format(error=error)} {json_only}"},
            ]
            content = await self._complete(client, shape, messages)
            try:
                return parse(content, answer)
            except ValueError as e:
                raise InvalidReply(str(e)) from None

    async def _complete(
        self, client: httpx.AsyncClient, shape: _Shape, messages: list[dict[str, str]]
    ) -> str:
        """The model's text for ``messages`` (after the system prompt)."""
        response = await client.post(self.url, json=self._body(shape, messages, self.structured))
        if response.status_code == 400 and self.structured:
            # Most likely response_format: the same without it, and so on if that works.
            response = await client.post(self.url, json=self._body(shape, messages, False))
            if response.is_success:
                log.info("%s refused response_format: asking for JSON", self.url)
                self.structured = False
        response.raise_for_status()
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"the response has no message ({type(e).__name__})") from None
        if not isinstance(content, str):
            raise ValueError("the reply has no text")
        return content

    def _body(
        self, shape: _Shape, messages: list[dict[str, str]], structured: bool
    ) -> dict[str, Any]:
        system = shape.system if structured else f"{shape.system}\n{shape.json_only}"
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, *messages],
            "temperature": 0,
        }
        if structured:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": shape.name, "strict": True, "schema": shape.schema},
            }
        return body


class _Shape:
    __slots__ = ("json_only", "name", "schema", "system")

    def __init__(self, system: str, json_only: str, name: str, schema: dict[str, Any]) -> None:
        self.system = system
        self.json_only = json_only
        self.name = name
        self.schema = schema
