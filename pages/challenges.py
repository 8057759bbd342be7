"""Challenges page: a teacher sets a task, students submit runs, a board ranks them on
hidden test images.

Everyone sees the challenges, their limits and the live board; a student trains for one
("Train for this challenge": its data set ``challenge:<id>`` becomes the current one),
submits a finished run of their own and sees their scores; a teacher (anyone in personal
mode) sets challenges, sees every submission with its confusion matrix on the hidden
split, and downloads the board as CSV. Sections are in pages/challenge_parts.py; the
checks are cnnlab's (the store, and the engine that scores in a worker).
"""

from __future__ import annotations

import streamlit as st

from cnnlab.people import access
from cnnlab.runs import challenges
from cnnlab.runs import store as runs
from pages import challenge_parts as parts
from pages import state
from pages.signin import current_user, md

user = current_user()  # class mode: signed-in people only
class_mode = access.load_settings().class_mode
root = runs.default_root().resolve()
st.title(":material/emoji_events: Challenges")

if challenges.can_create(user, class_mode):
    parts.create_form(user, class_mode, root)

listed = challenges.list_challenges(root)
if not listed:
    st.info("No challenges yet." + (" Set one above." if challenges.can_create(
        user, class_mode) else " Your teacher sets them; they appear here."))
    st.stop()

by_id = {c.id: c for c in listed}
wanted = state.address_choice("challenge")
if wanted in by_id:
    st.session_state["ch_pick"] = wanted
if st.session_state.get("ch_pick") not in by_id:
    st.session_state["ch_pick"] = listed[0].id
chosen_id = st.selectbox(
    "Challenge", list(by_id), key="ch_pick",
    format_func=lambda cid: by_id[cid].name + (" (closed)" if by_id[cid].closed() else ""))
state.show_in_address("challenge", chosen_id)
challenge = by_id[chosen_id]

parts.facts(challenge)
parts.train_for(challenge)
if challenge.closed():
    st.warning(md(challenges.deadline_problem(challenge) or ""))
else:
    parts.submit_section(root, challenge, user)
parts.board_section(root, challenge, user)
if user.is_teacher:
    st.divider()
    parts.teacher_section(root, challenge)
