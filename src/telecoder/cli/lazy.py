"""Typer's per-option validation, built only for the options a command line gives.

Typer (0.2x) checks each option's value through a Pydantic ``TypeAdapter``, and builds one for
every option of the command that runs — given or not, ``None`` or not — which imports Pydantic
and costs more than everything else ``telecoder run --detach --server URL`` does. Text needs no
checking, so :func:`lean` gives each option a stand-in that passes ``str`` values (and lists of
them, and defaults already of their type) through as they are and builds Typer's own check, the
first time it is needed, for anything else: an ``int`` given as text, a path, a range.

On a Typer without these internals it leaves the command as it is (slower, the same).
"""

from __future__ import annotations

import dataclasses
from typing import Any

try:
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
except ImportError:  # another Typer: nothing to make lean
    RuntimeParam = None  # type: ignore[assignment,misc]


def lean(command: Any) -> Any:
    """``command`` (and its subcommands), its options validated only when they need it."""
    if RuntimeParam is None:
        return command
    for sub in getattr(command, "commands", {}).values():
        lean(sub)
    for param in getattr(command, "params", ()):
        _lean_param(param)
    made = getattr(command, "get_help_option", None)
    if made is not None:  # --help is made when first asked for: make it lean then

        def get_help_option(ctx: Any) -> Any:
            option = made(ctx)
            if option is not None:
                _lean_param(option)
            return option

        command.get_help_option = get_help_option
    return command


def _lean_param(param: Any) -> None:
    descriptor = getattr(param, "type_descriptor", None)
    if isinstance(descriptor, TypeDescriptor) and getattr(param, "_runtime_param", 0) is None:
        try:
            stand_in = _Lean(
                parameter_info=descriptor.parameter_info,
                annotation=descriptor.annotation,
                descriptor=descriptor,
            )
        except (TypeError, AttributeError):  # Typer's internals changed: keep its own check
            return
        param._runtime_param = stand_in


if RuntimeParam is not None:

    @dataclasses.dataclass(frozen=True)
    class _Lean(RuntimeParam):
        descriptor: TypeDescriptor

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            annotation = self.annotation
            if annotation is str and type(value) is str:
                return value
            if annotation == list[str] and all(type(v) is str for v in value):
                return list(value)
            if (
                annotation in (int, float)
                and type(value) is annotation
                and not self.descriptor.is_ranged
            ):
                return value  # a default: already what it should be
            real = build_runtime_param(self.descriptor)
            param._runtime_param = real
            return real._coerce_value(value, param=param, ctx=ctx)
