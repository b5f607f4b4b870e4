"""Templates: named prompts with variables, in YAML.

Shipped ones live in ``telecoder/templates_builtin/*.yaml``; an operator's in
``$TELECODER_HOME/templates/*.yaml`` (one of the same name replaces the shipped one)::

    description: Upgrade one dependency.
    prompt: "Upgrade {{ package }} to {{ version }}, fixing what breaks."
    vars:
      package: {required: true}
      version: {default: latest}
    engine: claude-code          # optional

The prompt is rendered by Jinja2's ``SandboxedEnvironment`` with ``StrictUndefined`` (a template
cannot reach Python internals); a required variable not given, or one the prompt uses that is
neither given nor defaulted, is a BadInput naming it. Variables the template does not declare are
refused too (a typo would otherwise be silently ignored).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from telecoder.errors import BadInput, TemplateNotFound

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
BUILTIN = Path(__file__).parent / "templates_builtin"
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


class VarSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required: bool = Field(default=False, description="The template cannot render without it.")
    default: str | None = Field(default=None, description="The value when none is given.")
    description: str | None = None


class TemplateSpec(BaseModel):
    """One template's definition, as its YAML file holds it."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="Optional: the file's name is the name.")
    description: str = ""
    prompt: str = Field(description="Jinja2 text with {{ variables }}.")
    vars: dict[str, VarSpec] = Field(default_factory=dict)
    engine: str | None = None

    @model_validator(mode="after")
    def _parses(self) -> TemplateSpec:
        try:
            _ENV.parse(self.prompt)
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"the prompt template: {e.message} (line {e.lineno})") from e
        return self


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    spec: TemplateSpec
    path: Path
    builtin: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.spec.description,
            "prompt": self.spec.prompt,
            "vars": {k: v.model_dump(exclude_none=True) for k, v in self.spec.vars.items()},
            "engine": self.spec.engine,
            "builtin": self.builtin,
            "path": str(self.path),
        }

    def render(self, given: Mapping[str, str]) -> str:
        """The prompt with ``given`` (and the defaults) filled in."""
        unknown = sorted(set(given) - set(self.spec.vars))
        if unknown:
            known = ", ".join(sorted(self.spec.vars)) or "none"
            raise BadInput(
                f"template {self.name!r} has no variable {unknown[0]!r} (its variables: {known})"
            )
        values: dict[str, str] = {}
        for key, var in self.spec.vars.items():
            if key in given:
                values[key] = given[key]
            elif var.default is not None:
                values[key] = var.default
            elif var.required:
                raise BadInput(f"template {self.name!r} needs the variable {key!r} (--var {key}=…)")
        try:
            text = _ENV.from_string(self.spec.prompt).render(values).strip()
        except jinja2.UndefinedError as e:
            missing = re.search(r"'(\w+)' is undefined", str(e))
            what = repr(missing.group(1)) if missing else str(e)
            raise BadInput(f"template {self.name!r} needs the variable {what}") from None
        except jinja2.TemplateError as e:
            raise BadInput(f"template {self.name!r} failed to render: {e}") from None
        if not text:
            raise BadInput(f"template {self.name!r} rendered an empty prompt")
        return text


def parse_vars(pairs: Sequence[str]) -> dict[str, str]:
    """``["k=v", …]`` (from ``--var``) as a dict; BadInput for one without ``=``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--var {pair!r}: give it as NAME=VALUE")
        out[key.strip()] = value
    return out


def _parse(name: str, path: Path, builtin: bool) -> Template:
    try:
        data = yaml.safe_load(path.read_text())
        spec = TemplateSpec.model_validate(data if data is not None else {})
    except yaml.YAMLError as e:
        raise BadInput(f"template {name!r}: not valid YAML: {e}") from None
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        )
        raise BadInput(f"template {name!r}: {problems}") from None
    return Template(name, spec, path, builtin)


def _paths(directory: Path | None) -> dict[str, tuple[Path, bool]]:
    found = {p.stem: (p, True) for p in sorted(BUILTIN.glob("*.yaml"))}
    if directory is not None and directory.is_dir():
        found.update({p.stem: (p, False) for p in sorted(directory.glob("*.yaml"))})
    return {k: v for k, v in found.items() if NAME.match(k)}


def load(directory: Path | None, name: str) -> Template:
    """The template ``name``: the operator's in ``directory``, else the shipped one."""
    found = _paths(directory).get(name) if NAME.match(name) else None
    if found is None:
        raise TemplateNotFound(f"no template {name!r} (see `telecoder templates list`)")
    return _parse(name, *found)


def all_templates(directory: Path | None) -> list[Template | BadInput]:
    """Every template, by name (one that cannot be read, as its error)."""
    out: list[Template | BadInput] = []
    for name, (path, builtin) in sorted(_paths(directory).items()):
        try:
            out.append(_parse(name, path, builtin))
        except BadInput as e:
            out.append(e)
    return out


def render(directory: Path | None, name: str, given: Mapping[str, str]) -> tuple[str, str | None]:
    """The prompt of template ``name`` with ``given``, and the engine it names (if any)."""
    template = load(directory, name)
    return template.render(given), template.spec.engine
