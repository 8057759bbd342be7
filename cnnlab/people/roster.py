"""A class in one step: accounts from a roster file, and a teacher's password reset.

A roster is CSV text, one person a line: a name and, optionally, a role::

    name,role            ← an optional header line
    kim.minji
    lee.jun,student
    park,teacher

An empty role means student; blank lines are skipped. Every line is checked before anything
is made, and one bad line refuses the whole file (RosterError names each bad line), so a
teacher fixes the file and runs the import again instead of working out which half exists.
Each account gets a generated password (accounts.generate_password), returned once: only its
hash is kept.

A teacher may reset a student's password from the Runs page (``reset_password``); that ends
the student's sessions. A teacher's own password is the operator's to reset
(``python -m cnnlab users reset NAME``), so a teacher account cannot take over another.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from cnnlab.people.access import AccessDenied
from cnnlab.people.accounts import (
    ROLES,
    AccountError,
    Accounts,
    User,
    check_name,
    generate_password,
)

HEADER = ("name", "role")
NAME_RULE = ("1 to 64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit, "
             "e.g. kim.minji")


class RosterError(AccountError):
    """A roster refused as a whole; ``problems`` holds one ``line N: …`` entry per bad line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        bad = "1 bad line; fix it" if len(problems) == 1 else f"{len(problems)} bad lines; fix them"
        super().__init__(f"No account was created: the roster has {bad} and import it again."
                         "\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Entry:
    """One checked roster line: its line number, the clean name and the role."""

    line: int
    name: str
    role: str


class Created(NamedTuple):
    """An account just made, with its generated password (shown once, never stored)."""

    name: str
    role: str
    password: str


def _lines(text: str) -> Iterator[tuple[int, list[str], str]]:
    """(line number, cells, CSV error or "") of each non-blank line, trailing empty cells
    dropped (a spreadsheet saves ``ann,,``); line numbers are the editor's, header included."""
    reader = csv.reader(io.StringIO(text), strict=True)  # a stray quote is an error
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a malformed line is that line's problem, not the file's
            yield reader.line_num, [], str(exc)
            continue
        while cells and not cells[-1].strip():
            cells.pop()
        if cells:
            yield reader.line_num, cells, ""


def _is_header(cells: list[str]) -> bool:
    return tuple(c.strip().lower() for c in cells) in (HEADER[:1], HEADER)


def check_roster(text: str, existing: Accounts | None = None) -> list[Entry]:
    """The roster's people, every line checked; RosterError listing each bad line.

    A line is bad when it is not CSV, has more than two cells, its name is not a valid
    account name, its role is not student or teacher, its name is on an earlier line, or
    (with ``existing``) the name already has an account.
    """
    problems: list[str] = []
    entries: list[Entry] = []
    first_line: dict[str, int] = {}
    taken = {u.name for u in existing.users()} if existing is not None else set()
    for index, (line, cells, error) in enumerate(_lines(text)):
        if error:
            problems.append(f"line {line}: not readable as CSV ({error}); check the quotes "
                            "(\") on this line and the ones above it.")
            continue
        if index == 0 and _is_header(cells):
            continue
        if len(cells) > 2:
            problems.append(f"line {line}: {len(cells)} cells; give a name and, optionally, "
                            "a role (name,role).")
            continue
        raw_name, raw_role = cells[0], cells[1] if len(cells) > 1 else ""
        role = raw_role.strip().lower() or "student"
        if role not in ROLES:
            problems.append(f"line {line}: the role {raw_role.strip()!r} is not known; use "
                            "student or teacher, or leave it empty for student.")
        try:
            name = check_name(raw_name)
        except AccountError:
            problems.append(f"line {line}: the name {raw_name.strip()!r} is not allowed; use "
                            f"{NAME_RULE}.")
            continue
        if name in first_line:
            problems.append(f"line {line}: {name!r} is already on line {first_line[name]}; "
                            "give each person once.")
            continue
        first_line[name] = line
        if name in taken:
            problems.append(f"line {line}: there is already an account {name!r}; leave it out "
                            f"(a forgotten password: python -m cnnlab users reset {name}).")
            continue
        entries.append(Entry(line, name, role))
    if not problems and not entries:
        problems.append("line 1: the roster holds no names; give one name per line, with an "
                        "optional role (name,role).")
    if problems:
        raise RosterError(problems)
    return entries


def import_roster(accounts: Accounts, text: str) -> list[Created]:
    """Create an account with a generated password for each person on the roster, all in
    one write; the accounts in roster order. RosterError (nothing created) if any line is
    bad (see ``check_roster``)."""
    entries = check_roster(text, accounts)
    created = [Created(e.name, e.role, generate_password()) for e in entries]
    accounts.add_many(created)
    return created


def reset_password(actor: User, accounts: Accounts, name: str) -> str:
    """A teacher gives the student ``name`` a new password, which ends the student's sessions;
    returns it (to show once).

    AccessDenied unless ``actor`` is a teacher and ``name`` a student; AccountError for an
    unknown name.
    """
    if not actor.is_teacher:
        raise AccessDenied(f"You cannot reset {name}'s password: only a teacher may. A "
                           "forgotten password is reset by your teacher.")
    target = next((u for u in accounts.users() if u.name == check_name(name)), None)
    if target is None:
        raise AccountError(f"There is no account {name!r}; pick a name from the list.")
    if target.is_teacher:
        raise AccessDenied(f"{target.name} is a teacher: a teacher's password is reset by the "
                           f"server's operator (python -m cnnlab users reset {target.name}).")
    return accounts.reset_password(target.name)
