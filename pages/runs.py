"""Runs page: every training run in a sortable, filterable table; overlay the curves, scores
and config differences of several runs; one run's evaluation, downloads and management
(rename, delete, load into Configure, resume).

Run ids from the URL (``?run=<id>``) or session state are checked with cnnlab.runs.store before
any file is touched, so no id or name can reach outside the runs root. The run shown is kept
in the address, so a link opens this page on it.
"""

from __future__ import annotations

import streamlit as st

from cnnlab.people import access
from cnnlab.runs import store as runs
from cnnlab.use import compare
from pages import state
from pages.common import engine
from pages.run_detail import run_detail
from pages.runs_list import (
    compare_section,
    labels_for,
    no_runs,
    pick_run,
    runs_table,
    scoped_rows,
    teacher_panel,
)
from pages.signin import current_user, md

# ---------------------------------------------------------------------------- page

user = current_user()  # class mode: everyone reads runs; owners and teachers change them
class_mode = access.load_settings().class_mode
st.title(":material/bar_chart: Runs")
root = runs.default_root().resolve()
where = f" in `{root}`" if user.is_teacher else ""  # students never see server paths
manager = engine()  # also marks runs left "running" by a dead server as interrupted

flash = state.take_runs_flash()
if flash:
    st.success(md(flash))

all_runs = runs.list_runs(root)
if not all_runs:
    no_runs(where)
    st.stop()

rows = [compare.run_row(r) for r in all_runs]
if user.is_teacher and class_mode:
    teacher_panel(manager, rows, user)
if class_mode:
    rows = scoped_rows(user, rows)
by_id = {r["run_id"]: r for r in rows}
info_by_id = {r.run_id: r for r in all_runs}
labels = labels_for(rows)

runs_table(rows, where, class_mode)
compare_section(rows, info_by_id, labels)
st.divider()
run_id = pick_run(root, rows, labels)
state.select_run(info_by_id[run_id].run_dir)
run_detail(user, root, manager, by_id[run_id], info_by_id[run_id])
