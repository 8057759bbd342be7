"""Dependency floors: what pyproject.toml documents is what is installed and what is pinned.

The floors in pyproject.toml's [project] table (dependencies and every extra) are the contract
(the oldest versions that work and carry the security fixes named above each one);
constraints.txt pins the exact set the suite passed on.
These tests fail when an installed version is below its floor, when a pin and a floor drift
apart, or when Keras's security floor is lowered.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "constraints.txt"
INSTALL = 'pip install -e ".[dev]" -c constraints.txt'

# Keras before 3.14 loads an uploaded .keras file through published safe_mode bypasses and an
# archive path traversal (CVE-2026-1462, GHSA-hqp4-2352-xf5r and earlier): an upload runs code.
KERAS_SECURITY_FLOOR = Version("3.14")


@dataclass(frozen=True)
class Floor:
    """One requirement: where it is written (dependencies or an extra) and the comment
    that says why."""

    requirement: Requirement
    where: str
    why: str

    def describe(self) -> str:
        because = f" ({self.why})" if self.why else ""
        return f"{self.requirement} in pyproject.toml {self.where}{because}"


def _without_comment(line: str) -> tuple[str, str]:
    # pip's rule: "#" starts a comment at the start of a line or after whitespace.
    match = re.search(r"(^|\s)#", line)
    if match is None:
        return line.strip(), ""
    return line[: match.start()].strip(), line[match.end():].strip()


def _why(text: str, requirement: str) -> str:
    """The comment beside ``requirement``'s line in pyproject.toml, else the one above it."""
    lines = text.splitlines()
    quoted = f'"{requirement}"'
    for i, raw in enumerate(lines):
        if raw.strip().startswith(quoted):
            _, comment = _without_comment(raw)
            above = []
            for prev in reversed(lines[:i]):
                if not prev.strip().startswith("#"):
                    break
                above.insert(0, prev.strip().lstrip("#").strip())
            return comment or " ".join(above)
    return ""


def read_floors() -> list[Floor]:
    """Every requirement in pyproject.toml's [project]: dependencies and every extra.

    An extra that names this project (``cnnlab[ray,tensorboard]``) adds no floor of its own.
    """
    text = PYPROJECT.read_text()
    project = tomllib.loads(text)["project"]
    groups = {"dependencies": project["dependencies"],
              **{f"[{extra}]": reqs
                 for extra, reqs in project.get("optional-dependencies", {}).items()}}
    floors: list[Floor] = []
    for where, lines in groups.items():
        for line in lines:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) != canonicalize_name(project["name"]):
                floors.append(Floor(requirement, where, _why(text, line)))
    return floors


def read_pins() -> dict[str, tuple[str, Version]]:
    """constraints.txt as canonical name -> (name as written, pinned version)."""
    pins: dict[str, tuple[str, Version]] = {}
    for number, raw in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line, _ = _without_comment(raw)
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and name.strip() and version.strip(), (
            f"constraints.txt line {number} is {line!r}: every line must pin one exact "
            "version, name==version")
        pins[canonicalize_name(name.strip())] = (name.strip(), Version(version.strip()))
    return pins


FLOORS = read_floors()
BY_NAME: dict[str, list[Floor]] = {}
for _floor in FLOORS:
    BY_NAME.setdefault(canonicalize_name(_floor.requirement.name), []).append(_floor)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_installed_version_meets_its_floor(name: str) -> None:
    floors = [f for f in BY_NAME[name]
              if f.requirement.marker is None or f.requirement.marker.evaluate()]
    if not floors:
        pytest.skip(f"{name} is not for this platform")
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed")
    for floor in floors:
        assert floor.requirement.specifier.contains(installed, prereleases=True), (
            f"{name} {installed} is installed, but the floor is {floor.describe()}. "
            f"Install the tested set: {INSTALL}")


def test_every_pin_is_inside_the_floors() -> None:
    pins = read_pins()
    broken = [f"{pins[name][0]}=={pins[name][1]} breaks {floor.describe()}"
              for name, floors in BY_NAME.items() if name in pins
              for floor in floors
              if not floor.requirement.specifier.contains(pins[name][1], prereleases=True)]
    assert not broken, ("constraints.txt and pyproject.toml have drifted apart; raise the "
                        "pin or fix the floor:\n" + "\n".join(broken))


def test_every_requirement_is_pinned() -> None:
    pins = read_pins()
    unpinned = sorted(f.describe() for f in FLOORS
                      if canonicalize_name(f.requirement.name) not in pins)
    assert not unpinned, ("constraints.txt has no tested version for:\n" + "\n".join(unpinned)
                          + "\nRefresh it as its header says.")


def lowest_allowed(requirement: Requirement) -> Version | None:
    """The smallest version the specifier's lower bounds allow, or None without a lower bound."""
    bounds = [Version(s.version) for s in requirement.specifier
              if s.operator in (">=", ">", "==", "~=", "===") and "*" not in s.version]
    return max(bounds, default=None)


def test_keras_floor_carries_the_security_fixes() -> None:
    keras = [f for f in BY_NAME.get("keras", []) if f.where == "dependencies"]
    assert keras, ("pyproject.toml's dependencies must list keras with a floor (the app loads "
                   "uploaded models)")
    for floor in keras:
        lowest = lowest_allowed(floor.requirement)
        assert lowest is not None and lowest >= KERAS_SECURITY_FLOOR, (
            f"{floor.describe()} lets pip keep a Keras below {KERAS_SECURITY_FLOOR}, whose "
            "safe_mode can be bypassed by an uploaded model: keep keras>="
            f"{KERAS_SECURITY_FLOOR} or higher")
        assert not floor.requirement.specifier.contains("3.13.2", prereleases=True), (
            f"{floor.describe()} allows Keras 3.13.2, which has the path traversal "
            "GHSA-hqp4-2352-xf5r")


REQUIREMENTS = ROOT / "requirements.txt"


def test_requirements_txt_installs_this_project_with_the_tested_pins() -> None:
    """requirements.txt is the set-up a Streamlit user types first: it must install exactly
    what `pip install -e . -c constraints.txt` does, so it names this project and the pins,
    and any package it adds must be a pinned floor of pyproject.toml."""
    lines = [_without_comment(raw)[0] for raw in REQUIREMENTS.read_text().splitlines()]
    lines = [line for line in lines if line]
    assert "-c constraints.txt" in lines, (
        "requirements.txt must apply the tested pins: add the line '-c constraints.txt'")
    assert "-e ." in lines or "." in lines, (
        "requirements.txt must install this project (its dependencies live in "
        "pyproject.toml): add the line '-e .'")
    pins = read_pins()
    for line in lines:
        if line.startswith("-") or line == ".":
            assert line in ("-c constraints.txt", "-e ."), (
                f"requirements.txt has {line!r}; allowed are '-c constraints.txt' and '-e .'")
            continue
        name = canonicalize_name(Requirement(line).name)
        assert name in BY_NAME, (f"requirements.txt adds {line!r}, which pyproject.toml does "
                                 "not list: add it there (with its floor) instead")
        assert name in pins and Requirement(line).specifier.contains(pins[name][1]), (
            f"requirements.txt's {line!r} does not allow the tested pin in constraints.txt")


def test_readme_sets_up_with_requirements_txt() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "pip install -r requirements.txt && streamlit run app.py" in readme


def test_every_file_the_docs_name_exists() -> None:
    """A module moved (the rooms of cnnlab/) must not leave the docs pointing at nothing."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = {(doc.name, path) for doc in docs
             for path in re.findall(r"\b(?:cnnlab|pages|bench|tests)/[\w/]+\.py\b",
                                    doc.read_text())}
    assert named, "the docs name no files: the pattern is wrong"
    assert [(doc, path) for doc, path in sorted(named) if not (ROOT / path).exists()] == []
