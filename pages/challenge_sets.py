"""Challenge data sets in the pages: ``challenge:<id>`` listed, labelled and loaded.

pages.common calls these for names that start with ``challenge:`` (the data set picker,
``cached_dataset``), so Explore, Configure, Train, Runs and Draw & predict see a
challenge's **visible** set only (cnnlab.runs.challenge_data.visible); no page ever loads
its hidden split. Not a page itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from cnnlab.runs import challenges
from cnnlab.runs import store as runs
from cnnlab.text import markdown

if TYPE_CHECKING:
    from cnnlab.data.datasets import Dataset

PREFIX = challenges.CHALLENGE_PREFIX


def is_challenge(name: str | None) -> bool:
    """Whether ``name`` is a challenge's data set name."""
    return bool(name) and str(name).startswith(PREFIX)


@st.cache_data(ttl=5, show_spinner=False)
def _listing(root: str) -> list[tuple[str, str, bool]]:
    # (data set name, challenge name, closed) for every challenge; shared for 5 s.
    return [(c.dataset_name, c.name, c.closed()) for c in challenges.list_challenges(root)]


def names(current: str | None) -> list[str]:
    """The open challenges' data set names, and ``current`` when it is a challenge's (a
    closed one stays listed for whoever has it chosen)."""
    listed = _listing(str(runs.default_root().resolve()))
    out = [name for name, _, closed in listed if not closed]
    if is_challenge(current) and current not in out and any(n == current for n, _, _ in listed):
        out.append(str(current))
    return out


def label(name: str) -> str:
    """"Challenge: Fashion under 100k" for the picker."""
    listed = {n: title for n, title, _ in _listing(str(runs.default_root().resolve()))}
    return f"Challenge: {listed.get(name, name[len(PREFIX):])}"


@st.cache_resource(show_spinner="Preparing the challenge's images…", max_entries=4)
def _visible(root: str, challenge_id: str, created: str) -> Dataset:
    # One per server process and challenge, for every session (``created``: a challenge
    # deleted and made again under the same id is a new one).
    from cnnlab.runs import challenge_data

    del created
    return challenge_data.visible(root, challenges.load(root, challenge_id))


def visible(name: str) -> Dataset:
    """The visible set ``challenge:<id>`` (cached); DatasetUnavailable when there is none."""
    from cnnlab.data.datasets import DatasetUnavailable

    root = str(runs.default_root().resolve())
    try:
        challenge = challenges.load(root, name[len(PREFIX):])
    except challenges.ChallengeError as exc:
        raise DatasetUnavailable(str(exc)) from exc
    return _visible(root, challenge.id, challenge.created)


def warn_limits(name: str, params: int, epochs: int) -> None:
    """On a challenge's data set: its limits in a caption, and a warning for each one this
    model (``params``, ``epochs``) breaks, before anyone spends the training on it."""
    if not is_challenge(name):
        return
    try:
        challenge = challenges.load(runs.default_root().resolve(), name[len(PREFIX):])
    except challenges.ChallengeError:
        return  # the picker has already said the set is gone
    st.caption(f"Challenge **{markdown(challenge.name)}** limits: {challenge.limits.words()}.")
    for problem in challenges.plan_problems(challenge, params, epochs):
        st.warning(markdown(problem), icon=":material/emoji_events:")
