"""A council's markdown report (``council report``): the target, the reviewers and how each
answered, then the consensus, majority and minority recommendations — each with its severity,
location and reviewers, and every reviewer's rationale — and the reviewers the tally lacks.

Made from ``council.tally_json``; written where the caller says, by default under the run's
directory in ``$TELECODER_HOME`` (``runs/<run>/council-report.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from telecoder import private

SECTIONS = (
    ("consensus", "Consensus", "every reviewer who answered made it"),
    ("majority", "Majority", "more than half of them made it"),
    ("minority", "Minority", "half of them or fewer made it"),
)


def default_path(home: Path, run_id: str) -> Path:
    return home / "runs" / run_id / "council-report.md"


def markdown(data: dict[str, Any]) -> str:
    run = data["run"]
    lines = [f"# Council report: {_inline(run.get('name') or run['id'])}", ""]
    lines += [
        f"Run `{run['id']}` · {run['status']} · tally {data['note']}.",
        "",
        "## Reviewers",
        "",
    ]
    for r in data["reviewers"]:
        model = f" ({r['model']})" if r.get("model") else ""
        state = r["status"]
        if r["status"] == "answered":
            state += f": {r['recommendations']} recommendation(s)"
        elif r.get("why"):
            state += f": {_inline(r['why'])}"
        lines.append(
            f"- **{r['reviewer']}** — {r['engine']}{model}, session `{r['session_id']}`: {state}"
        )
    for key, title, meaning in SECTIONS:
        groups = data[key]
        lines += ["", f"## {title} ({len(groups)})", "", f"_{meaning}_", ""]
        if not groups:
            lines.append("None.")
        for group in groups:
            lines += _group(group)
    missing = data["missing"]
    lines += ["", f"## Missing reviewers ({len(missing)})", ""]
    if not missing:
        lines.append("None: every reviewer answered.")
    by_name = {r["reviewer"]: r for r in data["reviewers"]}
    for name in missing:
        r = by_name.get(name, {})
        lines.append(f"- **{name}**: {r.get('status', 'missing')} — {_inline(r.get('why') or '')}")
    return "\n".join(lines) + "\n"


def _group(group: dict[str, Any]) -> list[str]:
    where = _where(group.get("location"))
    lines = [
        f"### {_inline(group['title'])}",
        "",
        f"- severity: **{group['severity']}**",
        f"- location: {where}",
        f"- reviewers: {', '.join(group['reviewers'])}",
        "",
    ]
    for rec in group["recommendations"]:
        said = _inline(rec["rationale"]) or "(no rationale)"
        other = _where(rec.get("location"))
        lines.append(f"> **{rec['reviewer']}** ({rec['severity']}, {other}): {said}")
        lines.append(">")
    if lines[-1] == ">":
        lines.pop()
    lines.append("")
    return lines


def _where(location: dict[str, Any] | None) -> str:
    if not location or not location.get("file"):
        return "general"
    line = f":{location['line']}" if location.get("line") is not None else ""
    return f"`{location['file']}{line}`"


def _inline(text: str) -> str:
    """One line, with nothing that would open markup (the text is a reviewer's: data)."""
    return " ".join(str(text).split()).replace("<", "&lt;")


def write(path: Path, text: str) -> Path:
    """The report at ``path`` (its directory made private when TeleCoder makes it)."""
    if not path.parent.exists():
        private.make_dir(path.parent)
    path.write_text(text)
    return path
