"""One run on the Runs page (not a page itself): its overview and its tabs.

- ``run_detail``: the overview, then the Evaluation, Downloads and Manage tabs;
- ``evaluation_tab``: curves, confusion matrix, per-class scores, the most confident mistakes;
- ``downloads_tab`` and ``exports_section``: the run's files, a Keras script, and SavedModel
  and TFLite exports made on request.

The Manage tab (rename, delete, resume, fine-tune) is in pages.run_manage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from cnnlab import charts
from cnnlab.data.datasets import DatasetUnavailable
from cnnlab.model.config import ModelConfig
from cnnlab.model.fit_settings import FitSettings
from cnnlab.model.models import to_keras_script
from cnnlab.people import access
from cnnlab.runs import store as runs
from cnnlab.runs.store import RunStatus
from cnnlab.train import training
from cnnlab.uploads.model_files import ModelRejected
from cnnlab.use import export
from pages import insight
from pages.boundary import report
from pages.common import cached_dataset, fmt_seconds, progress_bar
from pages.run_manage import manage_tab
from pages.signin import md

if TYPE_CHECKING:
    from cnnlab.people.accounts import User
    from cnnlab.train.jobs import Engine


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
    challenge_submit(user, root, row, status, config)
    tab_eval, tab_files, tab_manage = st.tabs(["Evaluation", "Downloads", "Manage"])
    with tab_eval:
        evaluation_tab(user, row, run_dir, history, metrics)
    with tab_files:
        downloads_tab(user, row, run_dir, config)
    with tab_manage:
        manage_tab(user, root, manager, row, run_dir, status, config)


def challenge_submit(user: User, root: Path, row: dict, status: dict, config: dict) -> None:
    """"Submit to <challenge>" on its owner's finished run trained for a challenge (the
    engine checks the limits, the deadline and the allowance, and scores it)."""
    from cnnlab.runs import challenges
    from pages.challenge_parts import submit_control

    challenge_id = challenges.id_of(str(row.get("dataset") or ""))
    if (challenge_id is None or access.owner_of(config) != user.name
            or status.get("status") not in ("finished", "stopped")):
        return
    try:
        challenge = challenges.load(root, challenge_id)
    except challenges.ChallengeError:
        return  # the challenge is gone: nothing to submit to
    if not challenge.closed():
        submit_control(user, challenge, row["run_id"], key=f"ch_submit_{row['run_id']}")
