"""Sections of the Challenges page, and the submit control the Runs page reuses.

Each section reads cnnlab.runs.challenges (the store, the board) and draws; a submission
goes to the engine (``Engine.submit_to_challenge``: checked there, scored in a worker).
Students see the board (names or aliases), their own submissions and scores; teachers
also every submission, its confusion matrix on the hidden split and the board as CSV.
Not a page itself.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timedelta
from pathlib import Path

import pandas as pd
import streamlit as st

from cnnlab.people import access
from cnnlab.people.accounts import User
from cnnlab.runs import challenges
from cnnlab.runs import store as runs
from cnnlab.runs.challenges import Challenge, Limits
from pages import state
from pages.common import cached_dataset, engine, fmt_seconds
from pages.signin import md

# ---------------------------------------------------------------------------- create


def create_form(user: User, class_mode: bool, root: Path) -> None:
    """The form that sets a challenge (teachers; anyone in personal mode)."""
    from cnnlab.data import datasets

    names = list(datasets.REGISTRY)
    upload = state.uploaded_dataset()
    if upload is not None:
        names.append(upload.info.name)
    with st.expander("Set a challenge", icon=":material/add:", expanded=False), \
            st.form("ch_create", enter_to_submit=False):
        name = st.text_input("Name", placeholder="Fashion under 100k", max_chars=80)
        brief = st.text_area("Brief", placeholder="Best Fashion-MNIST model under 100,000 "
                             "parameters and 5 minutes of training.", max_chars=2000)
        source = st.selectbox(
            "Data set", names, format_func=lambda n: (
                f"Your images: {n[len(datasets.UPLOAD_PREFIX):]}" if n.startswith(
                    datasets.UPLOAD_PREFIX) else datasets.REGISTRY[n].title),
            help="A registry set's own test set is the hidden split; of your upload, a "
                 "seeded share is hidden.")
        a, b, c = st.columns(3)
        max_params = a.number_input("Maximum parameters (0: none)", 0, 100_000_000, 100_000,
                                    step=10_000)
        max_epochs = b.number_input("Maximum epochs (0: none)", 0, 1000, 0)
        max_minutes = c.number_input("Maximum minutes of training (0: none)", 0.0, 10_000.0,
                                     0.0, step=1.0)
        a, b, c = st.columns(3)
        per_person = a.number_input("Submissions per person", 1, 1000, 3)
        hidden_share = b.slider("Hidden share of an upload", 0.05, 0.5, 0.2, 0.05)
        seed = c.number_input("Seed", 0, 2**31 - 1, 0)
        a, b, c = st.columns(3)
        has_deadline = a.checkbox("Deadline (server time)", value=True)
        day = b.date_input("Day", datetime.now().date() + timedelta(days=7))
        at = c.time_input("Time", time(17, 0))
        show_names = st.checkbox("The board shows names (else aliases to students)")
        if not st.form_submit_button("Set the challenge", type="primary"):
            return
    try:
        made = challenges.create(
            root, user, class_mode=class_mode, name=name, brief=brief,
            source=cached_dataset(source),
            limits=Limits(int(max_params) or None, int(max_epochs) or None,
                          float(max_minutes) or None),
            per_person=int(per_person), show_names=show_names, seed=int(seed),
            hidden_share=float(hidden_share),
            deadline=datetime.combine(day, at) if has_deadline else None)
    except (challenges.ChallengeError, datasets.DatasetUnavailable) as exc:
        st.error(md(exc))
        return
    st.session_state["ch_pick"] = made.id
    st.success(md(f"Challenge {made.name!r} is set: students train on its data set and "
                  "submit their best run."))


# ---------------------------------------------------------------------------- one challenge


def facts(challenge: Challenge) -> None:
    """The brief, the limits, the deadline and the allowance."""
    if challenge.brief:
        st.markdown(md(challenge.brief))
    closed = challenge.closed()
    deadline = challenge.deadline or "none"
    st.caption(md(
        f"Data set: {challenge.dataset_name} (from {challenge.source}) · Limits: "
        f"{challenge.limits.words()} · Deadline: {deadline} (server time)"
        f"{' — closed, the board is final' if closed else ''} · "
        f"{challenge.per_person} submission(s) per person; the best counts"))


def train_for(challenge: Challenge) -> None:
    """"Train for this challenge": its data set becomes the current one, and Configure's
    epochs no more than its limit; then Configure, to shape a model within the limits."""
    if not st.button("Train for this challenge", icon=":material/model_training:",
                     key="ch_train", disabled=challenge.closed()):
        return
    state.set_dataset(challenge.dataset_name)
    chosen = state.model_choice()
    limit = challenge.limits.max_epochs
    if chosen is not None and limit is not None and chosen[1].epochs > limit:
        config, fit, preset = chosen
        state.set_model_choice(config, replace(fit, epochs=limit), preset)
    st.switch_page("pages/configure.py", query_params={"dataset": challenge.dataset_name})


def own_finished_runs(root: Path, challenge: Challenge, user: User) -> list[runs.RunInfo]:
    """``user``'s runs on the challenge's data set that may be submitted (finished or
    stopped, with a best model), newest first."""
    return [r for r in runs.list_runs(root)
            if r.dataset == challenge.dataset_name and access.owner_of(r.config) == user.name
            and r.status.get("status") in ("finished", "stopped")
            and runs.best_model_path(r.run_dir).is_file()]


def submit_control(user: User, challenge: Challenge, run_id: str, key: str) -> None:
    """A "Submit to <challenge>" button for run ``run_id``; the engine checks and scores."""
    if not st.button(f"Submit to {challenge.name}", icon=":material/upload:", key=key,
                     type="primary"):
        return
    try:
        sub = engine().submit_to_challenge(challenge.id, run_id, user)
    except (ValueError, access.AccessDenied) as exc:  # ChallengeError, EngineRefused
        st.error(md(exc))
        return
    st.success(md(f"Submitted run {run_id}: it is being scored on the hidden test images "
                  f"(submission {sub['id']}); the board updates when it is done."))


def submit_section(root: Path, challenge: Challenge, user: User) -> None:
    """Pick one of your finished runs for this challenge and submit it."""
    st.subheader("Submit")
    mine = own_finished_runs(root, challenge, user)
    if not mine:
        st.info(md(f"You have no finished run on {challenge.dataset_name} yet: press 'Train "
                   "for this challenge', train, then submit here or on the run's page."))
        return
    labels = {r.run_id: f"{r.name} ({r.run_id})" for r in mine}
    run_id = st.selectbox("Your run", list(labels), format_func=labels.__getitem__,
                          key="ch_run")
    submit_control(user, challenge, run_id, key="ch_submit")


def board_frame(rows: list[dict]) -> pd.DataFrame:
    """The board as the page shows it."""
    return pd.DataFrame([{
        "Rank": r["rank"], "Person": r["who"] + (" (you)" if r["you"] else ""),
        "Hidden-test accuracy": r["accuracy"], "Parameters": r["params"],
        "Training time": fmt_seconds(r["train_seconds"]), "Submitted at": r["submitted_at"],
    } for r in rows], columns=["Rank", "Person", "Hidden-test accuracy", "Parameters",
                               "Training time", "Submitted at"])


@st.fragment(run_every=5)
def board_section(root: Path, challenge: Challenge, user: User) -> None:
    """The live leaderboard, and this person's submissions (every one, for a teacher)."""
    subs = challenges.load_submissions(root, challenge.id)
    rows = challenges.board(challenge, subs, user)
    st.subheader("Leaderboard")
    st.caption(f"Your submissions: {challenges.used(subs, user.name)} of "
               f"{challenge.per_person} used.")
    if rows:
        st.dataframe(board_frame(rows), hide_index=True, column_config={
            "Hidden-test accuracy": st.column_config.NumberColumn(format="%.4f"),
            "Parameters": st.column_config.NumberColumn(format="localized")})
    else:
        st.info("No scored submissions yet.")
    shown = challenges.visible_submissions(subs, user)
    if not shown:
        return
    st.subheader("All submissions" if user.is_teacher else "Your submissions")
    st.dataframe(pd.DataFrame([{
        "Submission": s.id, "Person": s.person, "Run": s.run_id, "Status": s.status,
        "Hidden-test accuracy": s.accuracy, "Parameters": s.params,
        "Training time": fmt_seconds(s.train_seconds),
        "Submitted at": datetime.fromtimestamp(s.submitted_at).isoformat(timespec="seconds"),
        "Message": s.message} for s in reversed(shown)]), hide_index=True, column_config={
            "Hidden-test accuracy": st.column_config.NumberColumn(format="%.4f"),
            "Parameters": st.column_config.NumberColumn(format="localized")})


def teacher_section(root: Path, challenge: Challenge) -> None:
    """A submission's confusion matrix on the hidden split, and the board as CSV."""
    from cnnlab import charts

    subs = challenges.load_submissions(root, challenge.id)
    scored = [s for s in subs if s.status == challenges.SCORED and s.confusion]
    rows = challenges.board(challenge, subs, None)
    st.download_button("Download the board (CSV)", challenges.board_csv(rows),
                       file_name=f"{challenge.id}-board.csv", mime="text/csv",
                       icon=":material/download:", key="ch_csv")
    if not scored:
        return
    labels = {s.id: f"{s.person} — {s.run_id} ({s.accuracy:.4f})" for s in scored}
    pick = st.selectbox("Confusion matrix on the hidden split of", list(labels),
                        format_func=labels.__getitem__, key="ch_confusion")
    chosen = next(s for s in scored if s.id == pick)
    st.plotly_chart(charts.confusion_figure(chosen.confusion, list(challenge.class_names)),
                    key="ch_confusion_chart")
