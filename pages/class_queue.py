"""The class queue, for teachers (not a page itself): every run training or queued with its
owner and estimated start, and for each queued run 'Move to front' and 'Cancel'.

Drawn in the Runs page's Class panel (pages.runs_list.teacher_panel). It polls while
anything trains or waits, so the estimates follow the runs. The actions are checked in
cnnlab (Engine.move_to_front: teachers only; Engine.cancel: the owner or a teacher), not
only offered here; they run as button callbacks, before the table is drawn again, so the
table shows the new order at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from cnnlab.people.access import AccessDenied
from cnnlab.train.jobs import EngineRefused
from cnnlab.train.wait_estimate import about
from pages.boundary import guarded
from pages.signin import md

if TYPE_CHECKING:
    from cnnlab.people.accounts import User
    from cnnlab.train.jobs import Engine

POLL_SECONDS = 5.0
FLASH_KEY = "class_queue_flash"  # this section's last action: (ok, sentence)


def _when(seconds: float | None, prefix: str) -> str:
    """'starts in about 3 min'; 'not known yet' before an epoch was timed."""
    return "not known yet" if seconds is None else f"{prefix} {about(seconds)}"


def _act(action: Callable[[str, User], None], run_id: str, user: User, done: str) -> None:
    """A button's callback: do ``action`` and keep one sentence saying how it went."""
    try:
        action(run_id, user)
    except (AccessDenied, EngineRefused) as exc:
        st.session_state[FLASH_KEY] = (False, str(exc))
    else:
        st.session_state[FLASH_KEY] = (True, done)


def queue_section(manager: Engine, user: User) -> None:
    """The queue with owners, estimated starts and each queued run's actions."""
    active = bool(manager.running() or manager.queued())
    st.fragment(run_every=POLL_SECONDS if active else None)(_queue_view)(manager, user)


@guarded  # fragment reruns skip app.py's boundary
def _queue_view(manager: Engine, user: User) -> None:
    flash = st.session_state.pop(FLASH_KEY, None)
    if flash:
        (st.success if flash[0] else st.error)(md(flash[1]))
    estimate = manager.queue_estimate()
    rows = [{"run_id": j.run_id, "owner": j.owner, "state": "training",
             "when": _when(estimate.ends_in.get(j.run_id), "ends in")}
            for j in manager.running()]
    rows += [{"run_id": w.run_id, "owner": w.owner, "state": f"queued #{w.position}",
              "when": _when(w.starts_in_s, "starts in")} for w in estimate.waits]
    if not rows:
        st.caption("Nothing is training or queued.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="runs_class_queue",
                 column_config={"run_id": "Run id", "owner": "Owner", "state": "State",
                                "when": "Estimate"})
    for wait in estimate.waits:
        c1, c2, c3 = st.columns([4, 1, 1], vertical_alignment="center")
        c1.markdown(f"**#{wait.position}** · {md(wait.owner)} · `{wait.run_id}`")
        c2.button("Move to front", key=f"queue_front_{wait.run_id}", width="stretch",
                  disabled=wait.position == 1, on_click=_act,
                  args=(manager.move_to_front, wait.run_id, user,
                        f"Run {wait.run_id} of {wait.owner} starts next."))
        c3.button("Cancel", key=f"queue_cancel_{wait.run_id}", width="stretch",
                  on_click=_act,
                  args=(manager.cancel, wait.run_id, user,
                        f"Run {wait.run_id} of {wait.owner} was cancelled."))
    st.caption("Queued runs start in turn between people (one run each, then the next "
               "round); 'Move to front' puts a run before that order. Estimates use the "
               "epoch times measured on this server; early stopping can make runs end sooner.")
