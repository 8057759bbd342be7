"""The Manage tab of one run on the Runs page (not a page itself).

Rename, load into Configure, try in Draw & predict, resume, fine-tune and delete. Only the
run's owner and teachers change a run (``access.can_manage``); cnnlab.runs.store checks every
name and id, so none reaches outside the runs root.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from cnnlab.data.datasets import DatasetUnavailable
from cnnlab.model.config import PRESETS, ModelConfig
from cnnlab.model.fit_settings import FitSettings
from cnnlab.people import access
from cnnlab.runs import store as runs
from cnnlab.runs.store import RESUMABLE
from cnnlab.train import callbacks, training
from pages import state
from pages.common import cached_dataset
from pages.signin import md

if TYPE_CHECKING:
    from cnnlab.people.accounts import User
    from cnnlab.train.jobs import Engine


def manage_tab(user: User, root: Path, manager: Engine, row: dict, run_dir: Path,
               status: dict, config: dict) -> None:
    """Rename, load into Configure, try in Draw & predict, resume, fine-tune, delete."""
    run_id = row["run_id"]
    state_now = status.get("status")
    active = state_now in runs.ACTIVE
    mine = access.can_manage(user, row["owner"])
    best = runs.best_model_path(run_dir)
    if not mine:
        st.info(f"This is {md(row['owner'])}'s run: you can read it and load its settings "
                "into Configure; only they or a teacher can rename, resume, fine-tune or "
                "delete it.")
    a1, a2 = st.columns(2, gap="large")
    with a1:
        if mine:
            rename_control(user, root, row)
    with a2:
        st.markdown("**Use this model**")
        if st.button("Load into Configure", icon=":material/tune:", key="runs_to_configure",
                     disabled=runs.CONFIG_FILE in row["problem"]):
            load_into_configure(row, config)
        if best.is_file() and st.button("Try in Draw & predict", icon=":material/draw:",
                                        key="runs_to_predict"):
            st.switch_page("pages/predict.py", query_params={"run": run_id})
        if mine and state_now in RESUMABLE:
            checkpoint = callbacks.read_checkpoint(run_dir)
            if st.button("Resume from the last epoch", icon=":material/play_arrow:",
                         key="runs_resume", disabled=checkpoint is None,
                         help="Same weights, optimizer state and schedule, from the last "
                              "whole epoch, up to the planned epochs." if checkpoint else
                              "This run has no resumable checkpoint (last.keras)."):
                try:
                    job = manager.resume(run_dir, cached_dataset(row["dataset"]), user=user)
                except (ValueError, DatasetUnavailable, KeyError) as exc:
                    st.error(f"Cannot resume: {md(exc)}")
                else:
                    open_on_train(job.run_id, row["dataset"])
        if mine and not active and best.is_file():
            if st.button("Fine-tune from best", icon=":material/autorenew:", key="runs_finetune",
                         help="A new run that starts from this run's best weights with a fresh "
                              "optimizer; this run stays as it is."):
                try:
                    job = manager.fine_tune(run_dir, cached_dataset(row["dataset"]),
                                            epochs=training.total_epochs(
                                                training.request_from_config(config)),
                                            user=user)
                except (ValueError, TypeError, DatasetUnavailable, KeyError) as exc:
                    st.error(f"Cannot fine-tune: {md(exc)}")
                else:
                    open_on_train(job.run_id, row["dataset"])
    if mine:
        delete_control(user, root, row, state_now)


def rename_control(user: User, root: Path, row: dict) -> None:
    """A new name for the run (checked by cnnlab.runs.store: no paths)."""
    run_id = row["run_id"]
    st.markdown("**Rename**")
    new_name = st.text_input("New name", value=row["name"],
                             key=f"runs_rename_{run_id}", max_chars=runs.NAME_MAX)
    if st.button("Rename", key="runs_rename"):
        try:
            runs.rename_run(root, run_id, new_name, user)
        except (runs.RunPathError, access.AccessDenied) as exc:
            st.error(md(exc))
        else:
            state.flash_on_runs(f"Renamed to “{new_name.strip()}”.")
            st.rerun()


def load_into_configure(row: dict, config: dict) -> None:
    """The run's model and fit settings (and data set) become Configure's; go there."""
    try:
        loaded = ModelConfig.from_dict(config.get("model"))
        loaded_fit = FitSettings.from_dict(config.get("fit"))
    except ValueError as exc:  # ConfigError included
        st.error(f"Cannot load this run's config: {md(exc)}")
        return
    preset = config.get("preset")
    state.set_model_choice(loaded, loaded_fit, preset if preset in PRESETS else state.CUSTOM)
    state.set_dataset(row["dataset"])
    st.switch_page("pages/configure.py", query_params={"dataset": row["dataset"]})


def open_on_train(run_id: str, dataset: str) -> None:
    """Show a just resumed or fine-tuned run on the Train page, with its data set."""
    state.show_training_run(run_id)
    state.set_dataset(dataset)  # Train shows its set
    st.switch_page("pages/train.py", query_params={"dataset": dataset})


def delete_control(user: User, root: Path, row: dict, state_now: str | None) -> None:
    """Delete the run, after a confirmation; an active run must be stopped first."""
    run_id = row["run_id"]
    pending = st.session_state.get("runs_delete_pending")
    st.markdown("**Delete**")
    if state_now in runs.ACTIVE:
        st.caption(f"This run is {state_now}: stop it on the Train page before deleting it.")
    elif pending != run_id:
        if st.button("Delete this run…", icon=":material/delete:", key="runs_delete"):
            st.session_state["runs_delete_pending"] = run_id
            st.rerun()
    else:
        st.warning(f"Delete **{md(row['name'])}** (`{run_id}`) and all its files? This cannot "
                   "be undone.")
        d1, d2, _ = st.columns([1, 1, 3])
        if d1.button("Yes, delete", type="primary", key="runs_delete_confirm"):
            st.session_state.pop("runs_delete_pending", None)
            try:
                runs.delete_run(root, run_id, user)
            except (runs.RunPathError, ValueError, OSError) as exc:
                st.error(f"Could not delete: {md(exc)}")
            else:
                state.forget_selected_run()
                state.show_in_address("run", None)
                state.flash_on_runs(f"Deleted run {run_id}.")
                st.rerun()
        if d2.button("Cancel", key="runs_delete_cancel"):
            st.session_state.pop("runs_delete_pending", None)
            st.rerun()

