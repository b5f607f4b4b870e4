"""deploy/prometheus/alerts.yml names only metrics /metrics exports, and has the alerts the
operations guide describes (each with a severity, a summary and a runbook link)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from telecoder import metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


def exported(name: str) -> bool:
    if name in metrics.NAMES:
        return True
    return any(name.endswith(p) and name.removesuffix(p) in metrics.NAMES for p in _HISTOGRAM_PARTS)


def rules() -> list[dict[str, object]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_every_metric_an_alert_names_is_exported() -> None:
    named = {
        n for rule in rules() for n in re.findall(r"\btelecoder_[a-z0-9_]+", str(rule["expr"]))
    }
    assert named, "no metric found"
    assert sorted(n for n in named if not exported(n)) == []


def test_the_alerts_the_brief_asks_for_are_there_with_what_an_operator_needs() -> None:
    found = {str(rule["alert"]): rule for rule in rules()}
    assert {
        "TeleCoderQueueStuck",
        "TeleCoderFailureRateHigh",
        "TeleCoderNoHealthyWorker",
        "TeleCoderBudgetAt90Percent",
        "TeleCoderPausedTooLong",
    } <= set(found)
    guide = (ROOT / "docs" / "operations.md").read_text()
    for name, rule in found.items():
        labels, notes = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict)
        assert labels["severity"] in {"critical", "warning", "info"}, name
        assert isinstance(notes, dict)
        assert notes["summary"], name
        anchor = str(notes["runbook"]).split("#", 1)[1]
        assert anchor in _anchors(guide), anchor


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, spaces to dashes, punctuation dropped."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-") for h in headings}
