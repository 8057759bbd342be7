"""Runs page: every training run in a sortable, filterable table; overlay the curves, scores
and config differences of several runs; one run's evaluation, downloads and management
(rename, delete, load into Configure, resume).

Run ids from the URL (``?run=<id>``) or session state are checked with cnnlab.runs.store before
any file is touched, so no id or name can reach outside the runs root. The run shown is kept
in the address, so a link opens this page on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from cnnlab import charts
from cnnlab.data.datasets import DatasetUnavailable
from cnnlab.model.config import PRESETS, ModelConfig
from cnnlab.model.fit_settings import FitSettings
from cnnlab.model.models import to_keras_script
from cnnlab.people import access
from cnnlab.runs import store as runs
from cnnlab.runs.store import RESUMABLE, RunStatus
from cnnlab.train import callbacks, training
from cnnlab.uploads.model_files import ModelRejected
from cnnlab.use import compare, export
from pages import insight, state
from pages.boundary import report
from pages.common import cached_dataset, engine, fmt_seconds, progress_bar
from pages.signin import current_user, md

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


def teacher_panel(manager: Engine, rows: list[dict]) -> None:
    """Teachers: the queue with its owners and each person's use of the server."""
    with st.expander("Class: the queue and who uses the server", icon=":material/school:"):
        jobs_now = [(j, "training") for j in manager.running()] + [
            (j, f"queued #{n}") for n, j in enumerate(manager.queued(), 1)]
        if jobs_now:
            st.dataframe(pd.DataFrame(
                [{"run_id": j.run_id, "owner": j.owner, "state": doing} for j, doing in jobs_now]),
                hide_index=True, width="stretch", key="runs_class_queue")
        else:
            st.caption("Nothing is training or queued.")
        st.dataframe(pd.DataFrame(compare.usage(rows)), hide_index=True, width="stretch",
                     key="runs_class_usage", column_config={
                         "owner": "Person", "runs": "Runs", "active": "Queued or training",
                         "cpu_minutes": st.column_config.NumberColumn("CPU minutes",
                                                                      format="%.1f"),
                         "gpu_minutes": st.column_config.NumberColumn("GPU minutes",
                                                                      format="%.1f")})


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


def run_overview(row: dict, status: dict) -> None:
    """The run's name, facts, problems, last message and headline numbers."""
    st.subheader(md(row["name"]))
    st.caption(f"`{row['run_id']}` · {md(row['dataset'])} · {md(row['model'])} · "
               f"{md(row['device'] or 'no device')}")
    if row["problem"]:
        st.error(f"This run is damaged: {md(row['problem'])}")
    message = status.get("message")
    if message:
        state_now = status.get("status")
        show = {RunStatus.FINISHED: st.success, RunStatus.FAILED: st.error}.get(state_now,
                                                                                st.info)
        show(f"**{md(state_now)}** · {md(message)}")

    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Test accuracy", f"{row['test_accuracy']:.2%}" if row["test_accuracy"] is not None
              else "–")
    m2.metric("Best val accuracy", f"{row['best_val_accuracy']:.2%}"
              if row["best_val_accuracy"] is not None else "–")
    m3.metric("Parameters", f"{row['params']:,.0f}" if row["params"] is not None else "–")
    m4.metric("Time", fmt_seconds(row["seconds"]))


def evaluation_tab(user: User, row: dict, run_dir: Path, history: pd.DataFrame,
                   metrics: dict | None) -> None:
    """Curves, confusion matrix (a click opens a cell's test images), per-class scores,
    the hardest examples and the most confident mistakes."""
    if not history.empty:
        g1, g2 = st.columns(2)
        g1.plotly_chart(charts.training_curve_figure(history, "loss", height=260),
                        width="stretch", key="runs_loss")
        g2.plotly_chart(charts.training_curve_figure(history, "accuracy", height=260),
                        width="stretch", key="runs_acc")
    if metrics is None:
        st.info("No test-set evaluation for this run (it did not finish, or metrics.json is "
                "missing).")
        return
    names = [str(n) for n in metrics.get("class_names", [])]
    e1, e2 = st.columns([3, 2], gap="large")
    with e1:
        st.markdown("**Confusion matrix** (rows: true class; click a cell)")
        insight.confusion_chart("runs", row["run_id"], metrics)
    with e2:
        st.markdown("**Per class**")
        per_class = pd.DataFrame(metrics.get("per_class", [])).drop(columns="class",
                                                                     errors="ignore")
        for col in ("precision", "recall"):  # percent numbers: one format for all rows
            if col in per_class:
                per_class[col] = per_class[col] * 100
        st.dataframe(
            per_class,
            hide_index=True, width="stretch", key="runs_per_class",
            column_config={
                "name": "Class",
                "precision": st.column_config.NumberColumn("Precision", format="%.1f%%"),
                "recall": st.column_config.NumberColumn("Recall", format="%.1f%%"),
                "f1": st.column_config.NumberColumn("F1", format="%.3f"),
                "support": st.column_config.NumberColumn("Test images"),
            },
        )
    insight.cell_examples_section(user, "runs", row["run_id"], run_dir, row["dataset"],
                                  row["owner"], metrics)
    mistakes = metrics.get("mistakes", [])
    st.markdown(f"**Most confident mistakes** ({len(mistakes)})")
    if not mistakes:
        st.success("No mistakes on the test set.")
    elif not access.can_see_images(user, row["dataset"], row["owner"]):
        st.info("This run was trained on someone's own uploaded pictures: only they and "
                "teachers see its images; the numbers above are for everyone.")
    else:
        try:
            x_test = cached_dataset(row["dataset"]).x_test
        except (DatasetUnavailable, KeyError) as exc:
            st.info(f"The test images are not available here, so the mistakes cannot be "
                    f"drawn: {md(exc)}")
            return
        if all(0 <= m["index"] < len(x_test) for m in mistakes):
            st.caption("true → predicted (confidence): the errors the model was surest "
                       "about.")
            st.plotly_chart(charts.mistakes_figure(x_test, mistakes, names),
                            width="stretch", key="runs_mistakes")
        else:
            st.info("metrics.json does not match this data set's test images.")


def downloads_tab(user: User, row: dict, run_dir: Path, config: dict) -> None:
    """The run's files, a standalone Keras script, (teachers) its TensorBoard logs and the
    SavedModel and TFLite exports."""
    run_id = row["run_id"]
    files = [
        ("best.keras", runs.best_model_path(run_dir), "application/octet-stream",
         "the best checkpoint (Keras 3)"),
        ("history.csv", run_dir / runs.HISTORY_FILE, "text/csv", "loss and accuracy per epoch"),
        ("config.json", run_dir / runs.CONFIG_FILE, "application/json",
         "model and training settings"),
    ]
    cols = st.columns(4)
    for col, (fname, path, mime, what) in zip(cols, files, strict=False):
        exists = path.is_file()
        # Deferred read: the bytes are loaded only when the button is clicked.
        col.download_button(
            fname, icon=":material/download:",
            data=(lambda p=path: p.read_bytes()) if exists else b"",
            file_name=f"{run_id}-{fname}", mime=mime, disabled=not exists,
            key=f"runs_dl_{fname}", width="stretch",
            help=what if exists else f"{fname} is missing in this run's folder.",
        )
    try:
        model_cfg = ModelConfig.from_dict(config.get("model"))
        fit = FitSettings.from_dict(config.get("fit"))  # what the run trained with
        shape = tuple(config["input_shape"])
        # A server weights file stays on the server: the script starts from ImageNet's
        # weights when the run did, else from random ones.
        weights = "imagenet" if config.get("weights") == "imagenet" else None
        script = to_keras_script(model_cfg, fit, shape, int(config["n_classes"]),
                                 row["dataset"], weights=weights)
    except (KeyError, TypeError, ValueError):  # ConfigError is a ValueError
        script = None
    cols[3].download_button(
        "Keras script", icon=":material/download:", data=script or "", file_name=f"{run_id}.py",
        mime="text/x-python",
        disabled=script is None, key="runs_dl_script", width="stretch",
        help="A standalone Python script that builds and trains the same model in plain Keras"
        if script else "config.json is missing or unreadable, so no script can be written.",
    )
    logs = training.tensorboard_dir(run_dir)
    if logs.is_dir() and user.is_teacher:  # a server path: not for students
        st.caption("TensorBoard logs of this run (ticked on Train): view them with")
        st.code(f"tensorboard --logdir {logs}", language="bash")
    exports_section(row, run_dir)


def exports_section(row: dict, run_dir: Path) -> None:
    """best.keras as SavedModel and TFLite: made on request, then kept in the run's folder."""
    st.markdown("**Export**")
    best = runs.best_model_path(run_dir)
    if not best.is_file():
        st.caption(f"{runs.BEST_FILE} is missing in this run's folder, so there is nothing "
                   "to export.")
        return
    prepared = export.load_exports(run_dir)
    if prepared is None:
        st.caption("A TensorFlow SavedModel (zip) and TFLite models (float32, and int8 "
                   "weights), each checked against the Keras model on "
                   f"{export.CHECK_IMAGES} test images. Made once on request (seconds), then "
                   "kept with the run. Needs the TensorFlow backend of Keras.")
        if not st.button("Prepare exports", icon=":material/build:",
                         key="runs_export_prepare"):
            return
        prepared = prepare_exports(row, run_dir)
        if prepared is None:
            return
    run_id = row["run_id"]
    cols = st.columns(1 + len(prepared))
    cols[0].download_button(
        f".keras · {export.size_text(best.stat().st_size)}", icon=":material/download:",
        data=lambda: best.read_bytes(), file_name=f"{run_id}-{runs.BEST_FILE}",
        mime="application/octet-stream", key="runs_export_keras", width="stretch",
        help="Keras 3: keras.saving.load_model(path)")
    for col, item in zip(cols[1:], prepared, strict=True):
        path = export.export_path(run_dir, item.file_name)
        # Deferred read, as above: bytes are loaded only when the button is clicked.
        col.download_button(
            f"{item.label} · {export.size_text(item.size)}", icon=":material/download:",
            data=lambda p=path: p.read_bytes(), file_name=f"{run_id}-{item.file_name}",
            mime=item.mime, key=f"runs_export_{item.file_name}", width="stretch")
        if item.agreement:
            col.caption(f"agrees on {item.agreement[0]}/{item.agreement[1]} test images")


def prepare_exports(row: dict, run_dir: Path) -> list[export.ExportFile] | None:
    """Run the conversions under a progress bar; None (with a message shown) on failure."""
    try:  # the check images: the run's own test set, when this viewer can load it
        x_check = cached_dataset(row["dataset"]).x_test[:export.CHECK_IMAGES]
    except (DatasetUnavailable, KeyError) as exc:
        st.info(f"The test images are not available here, so the TFLite models are not "
                f"checked: {md(exc)}")
        x_check = None
    try:
        with progress_bar("Preparing exports…") as progress:
            return export.prepare_exports(run_dir, x_check, progress)
    except (export.ExportUnavailable, ModelRejected) as exc:
        st.error(md(exc))
    except Exception as exc:  # a converter failure is unexpected: logged with an id
        report(exc, "Runs: prepare exports")
    return None


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


def run_detail(user: User, root: Path, manager: Engine, row: dict, info: runs.RunInfo) -> None:
    """One run: its overview, then Evaluation, Downloads and Manage tabs."""
    run_dir = info.run_dir
    status = info.status if isinstance(info.status, dict) else {}
    config = runs.load_config(run_dir)
    config = config if isinstance(config, dict) else {}
    history = (pd.DataFrame() if runs.HISTORY_FILE in row["problem"]
               else runs.load_history(run_dir))
    metrics = runs.load_metrics(run_dir)
    metrics = metrics if isinstance(metrics, dict) and "confusion" in metrics else None

    run_overview(row, status)
    tab_eval, tab_files, tab_manage = st.tabs(["Evaluation", "Downloads", "Manage"])
    with tab_eval:
        evaluation_tab(user, row, run_dir, history, metrics)
    with tab_files:
        downloads_tab(user, row, run_dir, config)
    with tab_manage:
        manage_tab(user, root, manager, row, run_dir, status, config)


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
    teacher_panel(manager, rows)
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
