"""The Runs page's list of runs (not a page itself): the table, the comparison, the picker.

- ``runs_table``: every run in a sortable table, with search, data set and status filters;
- ``compare_section``: several runs' curves, scores and the settings that differ;
- ``pick_run``: which run the details below show (kept in the address, ``?run=<id>``);
- ``no_runs``, ``teacher_panel``, ``scoped_rows``: the empty root, the class queue and usage,
  "Mine" or "Everyone" in class mode.

Run ids from the URL or session state are checked with cnnlab.runs.store before any file is
touched, so no id or name can reach outside the runs root.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from cnnlab import charts
from cnnlab.runs import store as runs
from cnnlab.use import compare
from pages import state
from pages.class_accounts import password_reset_section
from pages.class_queue import queue_section
from pages.signin import md

if TYPE_CHECKING:
    from cnnlab.people.accounts import User
    from cnnlab.train.jobs import Engine


def pct(value: float | None) -> str:
    """0.857 → '85.70%', None → '–'."""
    return "–" if value is None else f"{value:.2%}"


def labels_for(rows: list[dict]) -> dict[str, str]:
    """run id → short label: the name, plus the start time where names repeat."""
    names = [r["name"] for r in rows]
    out = {}
    for r in rows:
        stamp = r["run_id"][9:15]
        when = f"{stamp[:2]}:{stamp[2:4]}:{stamp[4:]}"
        out[r["run_id"]] = f"{r['name']} · {when}" if names.count(r["name"]) > 1 else r["name"]
    return out


def url_run(root: Path, ids: list[str], wanted: str) -> str | None:
    """The run asked for in the address (``?run=<id>``), if it is safe and known.

    An id that would leave the runs root is refused with an error, never opened.
    """
    try:
        run_id = runs.run_dir_for(root, wanted).name
    except runs.RunPathError as exc:
        st.error(f"Cannot open the run in the address: {md(exc)}")
        return None
    if run_id not in ids:
        st.error(f"There is no run {md(repr(wanted))} in {md(root)}; pick one from the list.")
        return None
    return run_id


def session_run(root: Path, ids: list[str]) -> str | None:
    """The run picked on another page (``state.selected_run``), if it is one of ours."""
    chosen = state.selected_run()
    try:
        return runs.check_inside(root, chosen).name if chosen else None
    except runs.RunPathError:
        return None  # a run of another runs root


# ---------------------------------------------------------------------------- sections


def no_runs(where: str) -> None:
    """The empty runs root: where runs come from."""
    st.info(f"No runs yet{where}. Train a model on the **Train** page (the `quick` preset "
            "with *Limit training samples* takes seconds); every run lands here to compare.")
    if st.button("Go to Train", icon=":material/model_training:", key="runs_go_train"):
        st.switch_page("pages/train.py")


def teacher_panel(manager: Engine, rows: list[dict], user: User) -> None:
    """Teachers: the queue with owners, estimated starts and its actions (pages.class_queue),
    and each person's use of the server."""
    with st.expander("Class: the queue and who uses the server", icon=":material/school:"):
        queue_section(manager, user)
        st.dataframe(pd.DataFrame(compare.usage(rows)), hide_index=True, width="stretch",
                     key="runs_class_usage", column_config={
                         "owner": "Person", "runs": "Runs", "active": "Queued or training",
                         "cpu_minutes": st.column_config.NumberColumn("CPU minutes",
                                                                      format="%.1f"),
                         "gpu_minutes": st.column_config.NumberColumn("GPU minutes",
                                                                      format="%.1f")})
        password_reset_section(user)  # local accounts: a student's forgotten password


def scoped_rows(user: User, rows: list[dict]) -> list[dict]:
    """Class mode: "Mine" or "Everyone"; the page stops when the scope holds no run.

    Students start with their own runs; "Everyone" reads all (a link to another person's
    run switches to it once).
    """
    linked = st.query_params.get("run")
    if linked in {r["run_id"] for r in rows if r["owner"] != user.name}:
        if st.session_state.get("runs_scope_for") != linked:
            st.session_state["runs_scope"] = "Everyone"
            st.session_state["runs_scope_for"] = linked
    st.session_state.setdefault("runs_scope", "Everyone" if user.is_teacher else "Mine")
    scope = st.radio("Show", ["Mine", "Everyone"], key="runs_scope", horizontal=True)
    if scope != "Everyone":
        rows = [r for r in rows if r["owner"] == user.name]
    if not rows:
        st.info("You have no runs yet. Train one on the **Train** page, or choose "
                "**Everyone** to read the class's runs.")
        st.stop()
    return rows


def runs_table(rows: list[dict], where: str, class_mode: bool) -> None:
    """Every run in one sortable table, with search, data set and status filters."""
    table = pd.DataFrame(rows)
    f1, f2, f3 = st.columns([2, 1, 1])
    query = f1.text_input("Search", placeholder="name, id, model…", key="runs_search")
    sets = f2.multiselect("Data set", sorted(table["dataset"].unique()),
                          key="runs_filter_dataset")
    states = f3.multiselect("Status", sorted(table["status"].unique()),
                            key="runs_filter_status")
    shown = table
    if query.strip():
        text = shown["name"] + " " + shown["run_id"] + " " + shown["model"]
        shown = shown[text.str.contains(query.strip(), case=False, regex=False)]
    if sets:
        shown = shown[shown["dataset"].isin(sets)]
    if states:
        shown = shown[shown["status"].isin(states)]

    columns = ["name", "status", "dataset", "model", "params", "epochs", "best_val_accuracy",
               "test_accuracy", "seconds", "device", "problem", "run_id"]
    if class_mode:
        columns.insert(1, "owner")
    if not (table["problem"] != "").any():
        columns.remove("problem")
    view = shown[columns].copy()
    for col in ("best_val_accuracy", "test_accuracy"):  # percent numbers: one decimal, sortable
        view[col] = view[col].astype(float) * 100
    st.dataframe(
        view, hide_index=True, width="stretch", key="runs_table",
        column_config={
            "name": st.column_config.TextColumn("Name", width="medium"),
            "dataset": "Data set",
            "model": st.column_config.TextColumn("Model", width="medium"),
            "params": st.column_config.NumberColumn("Params", format="localized"),
            "epochs": "Epochs",
            "best_val_accuracy": st.column_config.NumberColumn("Best val acc", format="%.1f%%"),
            "test_accuracy": st.column_config.NumberColumn("Test acc", format="%.1f%%"),
            "seconds": st.column_config.NumberColumn("Time (s)", format="%.0f"),
            "device": "Device",
            "status": "Status",
            "problem": st.column_config.TextColumn("Problem", width="large"),
            "run_id": "Run id",
            "owner": "Owner",
        },
    )
    damaged = int((table["status"] == "damaged").sum())
    st.caption(f"{len(shown)} of {len(table)} runs{where}. Click a column header to sort."
               + (f" **{damaged} damaged** — see the Problem column." if damaged else ""))


def compare_section(rows: list[dict], info_by_id: dict[str, runs.RunInfo],
                    labels: dict[str, str]) -> None:
    """Several runs overlaid: their curves, scores and the settings that differ."""
    st.subheader("Compare runs")
    by_id = {r["run_id"]: r for r in rows}
    comparable = [r["run_id"] for r in rows if runs.HISTORY_FILE not in r["problem"]]
    # Start with the newest three; later drop runs that were deleted or became damaged.
    st.session_state["runs_compare"] = [
        i for i in st.session_state.get("runs_compare", comparable[:3]) if i in comparable]
    picked = st.multiselect("Runs to compare", comparable, format_func=labels.get,
                            key="runs_compare", placeholder="Pick two or more runs")
    if not picked:
        return
    histories = {labels[i]: runs.load_history(info_by_id[i].run_dir) for i in picked}
    histories = {k: h for k, h in histories.items() if not h.empty}
    if histories:
        st.plotly_chart(charts.runs_overlay_figure(histories), width="stretch",
                        key="runs_overlay")
        st.caption("Solid: validation · dotted: training. Click a run in the legend to hide it.")
    else:
        st.info("None of these runs has finished an epoch yet.")
    st.markdown("**Scores and settings that differ**")
    scores = [
        {"field": "test accuracy", **{labels[i]: pct(by_id[i]["test_accuracy"]) for i in picked}},
        {"field": "best val accuracy",
         **{labels[i]: pct(by_id[i]["best_val_accuracy"]) for i in picked}},
    ]
    settings = {labels[i]: compare.run_settings(runs.load_config(info_by_id[i].run_dir))
                for i in picked}
    # Text before the frame is built: a column mixing 24 and 0.25 would show 24 as 24.0.
    diff = [{k: v if k == "field" else "—" if v is None else str(v) for k, v in r.items()}
            for r in compare.config_diff(settings)]
    st.dataframe(pd.DataFrame(scores + diff).set_index("field"), width="stretch",
                 key="runs_diff")
    if len(picked) < 2:
        st.caption("Pick a second run to see which settings differ.")
    elif not diff:
        st.caption("These runs used the same settings: any difference in the scores is chance "
                   "(random initialisation and shuffling).")
    else:
        st.caption(f"Only the {len(diff)} setting(s) that differ are listed; list items count "
                   "from 1 (blocks[2] is Block 2 on Configure).")


def pick_run(root: Path, rows: list[dict], labels: dict[str, str]) -> str:
    """The run-details picker: a new address wins once; then the user's choice, which goes
    back into the address (bookmarkable, shareable). Returns the picked run id."""
    ids = [r["run_id"] for r in rows]
    wanted = state.address_choice("run")
    asked = url_run(root, ids, wanted) if wanted else None
    if asked:
        st.session_state["runs_pick"] = asked
    if st.session_state.get("runs_pick") not in ids:
        picked_elsewhere = session_run(root, ids)
        st.session_state["runs_pick"] = picked_elsewhere if picked_elsewhere in ids else ids[0]
    run_id = st.selectbox("Run details", ids, key="runs_pick",
                          format_func=lambda i: f"{labels[i]} — {i}")
    state.show_in_address("run", run_id)
    return run_id
