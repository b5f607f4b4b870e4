"""The model gateway's settings (README, "Model gateway"): where it listens, rate limits,
endpoint checks and the routing tiers."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field
from pydantic_settings import NoDecode


class GatewaySettings(BaseModel):
    # --- the model gateway (see README, "Model gateway") ---
    gateway: bool = Field(
        default=True,
        description="Agents reach models only through TeleCoder's gateway, with a per-attempt "
        "key; the real keys stay with the worker, which meters every request.",
    )
    gateway_host: str = Field(
        default="127.0.0.1", description="Address the gateway listens on (loopback)."
    )
    gateway_port: int = Field(
        default=0, ge=0, le=65535, description="Port of the gateway (0: a free port)."
    )
    # --- the model gateway: rate limits, endpoints, routing ---
    gateway_retry_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long the gateway waits out an endpoint's rate limit (429/503/529, "
        "honouring Retry-After) for one request before the agent gets the 429 and the session "
        "is requeued (rate_limited).",
    )
    endpoint_check_seconds: float = Field(
        default=60.0, gt=0, description="How often model endpoints are checked (health, models)."
    )
    endpoint_failures: int = Field(
        default=3,
        ge=1,
        description="Requests to an endpoint failing in a row (no answer, 5xx) that mark it "
        "unhealthy until a request or a check succeeds.",
    )
    tier_trivial: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Models for trivial tasks, in fallback order: endpoint:model entries, "
        "comma-separated (e.g. anthropic:claude-haiku-4-5,openai:gpt-5-mini).",
    )
    tier_standard: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Models for standard tasks (endpoint:model, comma-separated)."
    )
    tier_complex: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Models for complex tasks (endpoint:model, comma-separated)."
    )
