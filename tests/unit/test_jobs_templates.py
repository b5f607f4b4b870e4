"""Job schedules (cronsim slots, DST, @every, coalescing) and templates (sandboxed rendering),
as pure logic."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from telecoder import jobs, templates
from telecoder.errors import BadInput, TemplateNotFound


def ts(*parts: int, tz: str = "UTC") -> float:
    return datetime(*parts, tzinfo=ZoneInfo(tz)).timestamp()  # type: ignore[misc]


def slots(schedule: jobs.Schedule, start: float, end: float) -> list[float]:
    found, t = [], start
    while (t := schedule.after(t)) <= end:
        found.append(t)
    return found


def test_a_daily_job_fires_once_on_the_dst_fall_back_day_and_once_on_spring_forward() -> None:
    berlin = jobs.Schedule("30 2 * * *", "Europe/Berlin")
    zone = ZoneInfo("Europe/Berlin")
    # 2026-10-25: 02:30 happens twice in Berlin (CEST, then CET); it fires once.
    fall = slots(berlin, ts(2026, 10, 24, 12, tz="Europe/Berlin"), ts(2026, 10, 27, tz="UTC"))
    days = [datetime.fromtimestamp(t, zone).date() for t in fall]
    assert days == [date(2026, 10, 25), date(2026, 10, 26)]
    assert len(set(fall)) == len(fall)
    # 2026-03-29: 02:30 does not exist in Berlin; it still fires once that day.
    spring = slots(berlin, ts(2026, 3, 28, 12, tz="Europe/Berlin"), ts(2026, 3, 30, 12))
    assert [datetime.fromtimestamp(t, zone).date() for t in spring] == [
        date(2026, 3, 29), date(2026, 3, 30)
    ]  # fmt: skip
    # The latest slot seen from the fall-back night is that one slot, not a second one.
    night = ts(2026, 10, 25, 1, 45)  # 02:45 CET, after the second 02:30
    assert berlin.latest(night) == fall[0]
    assert berlin.due(fall[0], night) is None


def test_missed_slots_coalesce_into_the_latest() -> None:
    every = jobs.Schedule("@every 30s")
    assert every.interval == 30
    assert every.due(since=60, now=60 + 5 * 30 + 7) == 210  # five missed: only the latest
    assert every.due(since=210, now=215) is None
    assert every.after(215) == 240
    hourly = jobs.Schedule("@hourly")
    assert hourly.latest(ts(2026, 1, 1, 5, 59)) == ts(2026, 1, 1, 5)
    assert jobs.Schedule("@daily", "America/New_York").after(ts(2026, 1, 1)) == ts(
        2026, 1, 1, tz="America/New_York"
    )


@pytest.mark.parametrize(
    ("schedule", "tz", "problem"),
    [
        ("61 * * * *", "UTC", "61 * * * *"),
        ("@every", "UTC", "@every needs a duration"),
        ("@every soon", "UTC", "soon"),
        ("@daily", "Mars/Olympus", "unknown timezone"),
    ],
)
def test_a_bad_schedule_is_refused_naming_it(schedule: str, tz: str, problem: str) -> None:
    with pytest.raises(BadInput, match="job 'x'") as e:
        jobs.parse("x", {"schedule": schedule, "timezone": tz, "repos": ["r"], "prompt": "p"})
    assert problem in e.value.message


def test_a_job_needs_a_prompt_or_a_template() -> None:
    with pytest.raises(BadInput, match="exactly one of prompt and template"):
        jobs.parse("x", {"schedule": "@daily", "repos": ["r"]})
    with pytest.raises(BadInput, match="repos"):
        jobs.parse("x", {"schedule": "@daily", "repos": [], "prompt": "p"})


def write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yaml").write_text(text)


def test_a_template_renders_with_defaults_and_a_missing_variable_is_named(tmp_path: Path) -> None:
    prompt, engine = templates.render(
        tmp_path, "dependency-upgrade", {"package": "lodash", "version": "4.17.21"}
    )
    assert "Upgrade the dependency lodash to version 4.17.21" in prompt
    assert engine is None
    assert "version latest" in templates.render(tmp_path, "dependency-upgrade", {"package": "x"})[0]
    with pytest.raises(BadInput, match="needs the variable 'package'"):
        templates.render(tmp_path, "dependency-upgrade", {})
    with pytest.raises(BadInput, match="no variable 'pakage'"):
        templates.render(tmp_path, "dependency-upgrade", {"pakage": "x"})
    # An undeclared variable used by the prompt is named too (StrictUndefined).
    write(tmp_path, "loose", "prompt: 'fix {{ thing }} in {{ place }}'\nvars: {thing: {}}\n")
    with pytest.raises(BadInput, match="'place'"):
        templates.render(tmp_path, "loose", {"thing": "x"})


def test_templates_are_sandboxed_and_the_operators_replace_the_shipped(tmp_path: Path) -> None:
    write(tmp_path, "evil", "prompt: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\n")
    with pytest.raises(BadInput, match="evil"):
        templates.render(tmp_path, "evil", {})
    write(tmp_path, "dependency-upgrade", "prompt: mine {{ package }}\nvars: {package: {}}\n"
          "engine: shell\n")  # fmt: skip
    assert templates.render(tmp_path, "dependency-upgrade", {"package": "p"}) == ("mine p", "shell")
    write(tmp_path, "broken", "prompt: '{{ unclosed'\n")
    listed = templates.all_templates(tmp_path)
    names = {t.name for t in listed if isinstance(t, templates.Template)}
    assert {"dependency-upgrade", "evil"} <= names
    assert any(isinstance(t, BadInput) and "broken" in t.message for t in listed)
    with pytest.raises(TemplateNotFound):
        templates.load(tmp_path, "nope")


def test_shipped_templates_are_package_data() -> None:
    shipped = templates.all_templates(None)
    assert all(isinstance(t, templates.Template) and t.builtin for t in shipped)
    assert "dependency-upgrade" in {t.name for t in shipped if isinstance(t, templates.Template)}
    assert templates.BUILTIN.is_relative_to(Path(templates.__file__).parent)


def test_vars_from_the_command_line() -> None:
    assert templates.parse_vars(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(BadInput, match="NAME=VALUE"):
        templates.parse_vars(["novalue"])
