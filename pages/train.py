"""Train page: start, watch and stop a run; live curves, health warnings, test results.

Runs train in worker processes owned by the server's Engine (pages.common.engine), so
reruns, page switches, refreshes and other tabs all see the same run, and the page only
reads: a fragment polls the job while it is active; the curves are redrawn once per epoch.
The data set is in the address (``?dataset=mnist``), so a link opens this page on it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from cnnlab import charts
from cnnlab.data.datasets import DatasetUnavailable
from cnnlab.model import fit_settings, models
from cnnlab.model.config import OWN_IMAGES, PRESETS, ModelConfig, default_preset
from cnnlab.model.fit_settings import FitSettings
from cnnlab.people import access
from cnnlab.runs import store as runs
from cnnlab.runs.store import RESUMABLE, RunStatus
from cnnlab.train import callbacks, jobs, training, wait_estimate
from pages import challenge_sets, insight, state
from pages.boundary import guarded
from pages.common import (
    cached_dataset,
    dataset_or_stop,
    dataset_picker,
    engine,
    fmt_seconds,
)
from pages.signin import current_user, md

POLL_SECONDS = 2.0
FROM_CONFIGURE = "configure"


PHASES = {1: "phase 1, backbone frozen", 2: "phase 2, fine-tuning"}


def config_line(cfg: ModelConfig, fit: FitSettings) -> str:
    """'conv16 → conv32 → dense64 · adam lr 0.002 · early stop after 2' for the summary;
    a backbone model reads 'ResNet50 (frozen; top 20 layers fine-tuned 5 epochs) → …'."""
    parts = [f"conv{b.filters}" + (f"×{b.convs}" if b.convs > 1 else "") for b in cfg.blocks]
    if cfg.backbone:
        tuned = (f"; top {cfg.unfreeze} layers fine-tuned {fit.fine_tune_epochs} epochs at "
                 f"×{cfg.fine_tune_lr_factor:g} the learning rate"
                 if cfg.unfreeze and fit.fine_tune_epochs else "")
        parts.insert(0, f"{cfg.backbone} (frozen{tuned})")
    parts += [f"dense{d.units}" for d in cfg.dense]
    extra = f" · early stop after {fit.patience}" if fit.patience else " · no early stopping"
    return " → ".join(parts) + f" · {cfg.optimizer} lr {cfg.learning_rate:g}" + extra


def weights_line(weights: str | None) -> str:
    """How a backbone's starting weights read in the summary (a file by its name only)."""
    if weights is None:
        return "random weights"
    if weights == state.IMAGENET:
        return "ImageNet weights"
    return f"the weights file {md(Path(weights).name)}"


user = current_user()  # class mode: signed-in people only; their runs are theirs
st.title(":material/model_training: Train")
manager = engine()
if manager.unavailable():
    st.error(manager.unavailable())
manager.warm()  # a worker imports TensorFlow while the user picks settings

# ---------------------------------------------------------------- what to train
left, right = st.columns([1, 1], gap="large")
with left:
    ds_name = dataset_picker("train_dataset")
    dataset = dataset_or_stop(ds_name)
    info = dataset.info
    n_classes = len(info.class_names)

    configured = state.model_choice()  # None until Configure has been opened
    choices = list(PRESETS)
    if configured is not None:
        choices.insert(0, FROM_CONFIGURE)
    default = FROM_CONFIGURE if FROM_CONFIGURE in choices else default_preset(ds_name)
    if st.session_state.get("train_model") not in choices:
        st.session_state["train_model"] = default
    from_cfg = f"Configure page ({configured[2] if configured else state.CUSTOM})"
    choice = st.selectbox(
        "Model", choices, key="train_model",
        format_func=lambda c: from_cfg if c == FROM_CONFIGURE else f"preset: {c}",
    )
    if choice == FROM_CONFIGURE and configured is not None:  # offered only when it is set
        config, fit, configured_preset = configured
        # An unmodified preset is recorded under its name; a modified one as none.
        preset_name = configured_preset if configured_preset in PRESETS else None
    else:
        config, fit = PRESETS[choice].config, PRESETS[choice].fit
        preset_name = choice
    # A backbone starts from the weights chosen on Configure; a preset's from ImageNet's.
    weights = None
    if config.backbone:
        weights = state.weights_choice() if choice == FROM_CONFIGURE else state.IMAGENET
    params = models.total_params(config, info.image_shape, n_classes)
    st.caption(
        f"**{info.title}** · {len(dataset.y_train):,} train / {len(dataset.y_test):,} test "
        f"images of {'×'.join(map(str, info.image_shape))} · {n_classes} classes  \n"
        f"{config_line(config, fit)} · **{params:,}** parameters  \n"
        + (f"Starts from {weights_line(weights)}  \n" if config.backbone else "") +
        f"Trains in **{manager.describe()}**"
    )

with right:
    # Defaults sized to this data set: a batch never larger than the images left after the
    # split, and for your own images enough epochs for about 1,500 steps.
    use_limit_now = st.session_state.get("train_use_limit", False)
    n_fit = fit_settings.n_fit(len(dataset.y_train), st.session_state.get("train_val", 0.1),
                               st.session_state.get("train_limit") if use_limit_now else None)
    offered = fit_settings.defaults_for(fit, choice == OWN_IMAGES, n_fit)
    c1, c2 = st.columns(2)
    epochs = c1.number_input("Epochs", min_value=0, max_value=manager.budgets.max_epochs,
                             value=min(offered.epochs, manager.budgets.max_epochs),
                             key=f"train_epochs_{choice}_{ds_name}")
    batch_size = c2.number_input("Batch size", min_value=1, max_value=65536,
                                 value=offered.batch_size, key=f"train_batch_{choice}_{ds_name}")
    fine_tune_epochs = offered.fine_tune_epochs
    if config.backbone and config.unfreeze:
        fine_tune_epochs = st.number_input(
            "Fine-tune epochs (phase 2)", min_value=0, max_value=manager.budgets.max_epochs,
            value=min(offered.fine_tune_epochs, manager.budgets.max_epochs),
            key=f"train_fine_tune_{choice}_{ds_name}",
            help=f"After the epochs above, the top {config.unfreeze} layers of "
                 f"{config.backbone} train too, at ×{config.fine_tune_lr_factor:g} the "
                 "learning rate; 0 = no phase 2.")
    val_fraction = st.slider("Validation split", 0.05, 0.5, 0.1, 0.05, key="train_val")
    mixed = False
    if manager.executor is not None and manager.executor.gpu:
        mixed = st.toggle("Mixed precision (float16 compute, faster on recent GPUs)",
                          key="train_mixed")
    tensorboard = st.toggle("Also write TensorBoard logs", key="train_tensorboard",
                            help="Logs go to the run's tensorboard/ folder: "
                                 "`tensorboard --logdir runs` shows every run.")
    use_limit = st.toggle("Limit training samples (quick experiments)", key="train_use_limit")
    limit = None
    if use_limit:
        limit = st.number_input("Training samples to use", min_value=1,
                                max_value=len(dataset.y_train),
                                value=min(2000, len(dataset.y_train)), step=500,
                                key="train_limit")

# ---------------------------------------------------------------- which job to show
shown_id = state.shown_training_run()
job = manager.get(shown_id) if shown_id else None
if job is None or not access.can_manage(user, job.owner):
    job = manager.latest(user.name)  # a new tab or a refresh: this person's last run

request = training.TrainRequest(
    dataset=ds_name, config=config,
    fit=FitSettings(batch_size=int(batch_size), epochs=int(epochs), patience=offered.patience,
                    fine_tune_epochs=int(fine_tune_epochs)),
    val_fraction=float(val_fraction), limit=int(limit) if limit is not None else None,
    preset=preset_name, mixed_precision=mixed, tensorboard=tensorboard, weights=weights,
)
# Checked live, so Train is disabled with the reason before anyone presses it.
problems = manager.request_errors(request, dataset)
challenge_sets.warn_limits(ds_name, params, int(epochs) + int(fine_tune_epochs))
if problems:
    st.error("Cannot start this run:\n\n" + "\n".join(f"- {md(e)}" for e in problems))
b1, b2, b3 = st.columns([1, 1, 3], vertical_alignment="center")
clicked = b1.button("Queue run" if manager.busy() else "Train", type="primary",
                    icon=":material/play_arrow:", width="stretch", key="train_start",
                    disabled=bool(problems or manager.unavailable()))
if clicked:
    try:
        job = manager.submit(request, dataset, user=user)
    # DatasetUnavailable: the engine process could not open a class data set sent by name
    # (removed from the folder since this page drew).
    except (jobs.EngineRefused, DatasetUnavailable) as exc:
        st.error(md(exc))
    else:
        state.show_training_run(job.run_id)
# Drawn after a click is handled, so Stop shows at once for the run just started.
if job is not None and not job.done():
    if b2.button("Stop", icon=":material/stop:", width="stretch", key="train_stop"):
        manager.stop(job.run_id, user)
        st.toast("Stopping after the current batch…")
busy = manager.busy()
n_running, n_queued = len(manager.running()), len(manager.queued())
if n_running or n_queued:
    b3.caption(f"{n_running} run(s) training and {n_queued} queued on this server "
               f"({manager.describe()}); a new run "
               f"{'waits its turn' if busy else 'starts at once'}.")

if job is None:
    if not problems:
        st.info("Pick a data set and a model, then press **Train**. Try the `quick` preset with "
                "*Limit training samples* for a first run in seconds.")
    st.stop()

# ---------------------------------------------------------------- live view
active = not job.done()
history = runs.load_history(job.run_dir)


@st.fragment(run_every=POLL_SECONDS if active else None)
@guarded  # fragment reruns skip app.py's boundary
def status_view(run_id: str, was_active: bool, epochs_drawn: int) -> None:
    """Status, device, speed, progress bars and health warnings, polled while active.

    A finished epoch (or the end of the run) triggers one full rerun, which redraws the
    curves below: Plotly charts are re-sent once per epoch, not at every poll, because each
    redraw costs the server's event loop time that the training thread then waits for.
    """
    shown = manager.get(run_id)
    snap = shown.snapshot()
    if was_active and (snap["done"] or len(snap["history"]) > epochs_drawn):
        st.rerun()
    status, hist, batch = snap["status"], snap["history"], snap["batch"]
    state = status.get("status", "?")
    epochs_total = training.total_epochs(shown.request)

    speed = (f" · **{batch['samples_per_s']:,.0f}** samples/s"
             if batch and state == RunStatus.RUNNING else "")
    st.markdown(f"**Run** `{run_id}` · **{state}** · device: "
                f"**{status.get('device') or 'starting…'}**{speed}")
    if state == RunStatus.QUEUED:
        # Counts and minutes only: who owns the runs ahead is for teachers (Runs ▸ Class).
        wait = manager.wait_for(run_id)
        st.info(f"Queued: {wait_estimate.sentence(wait) if wait else 'starting…'}",
                icon=":material/hourglass_top:")
        st.caption("Queued runs start in turn between people. The estimate follows the runs "
                   "ahead as they train; early stopping can make it sooner.")
    elif state == RunStatus.RUNNING:
        done_epochs = len(hist)
        if batch:
            frac = batch["batch"] / batch["batches"]
            running = (f" · loss {batch['loss']:.4f} · accuracy {batch['accuracy']:.2%}"
                       if batch.get("loss") is not None and batch.get("accuracy") is not None
                       else "")
            # A backbone run's events say their phase; its epochs count on across both.
            phase = (f"{PHASES[batch['phase']].capitalize()} · "
                     if batch.get("phase") in PHASES else "")
            st.progress(frac, text=f"{phase}Epoch {batch['epoch']}/{batch['epochs']} · batch "
                        f"{batch['batch']}/{batch['batches']}{running} · ETA "
                        f"{fmt_seconds(batch['eta_epoch_s'])}")
            run_frac = min(1.0, (done_epochs + (frac if frac < 1 else 0)) / epochs_total)
            st.progress(run_frac, text=f"Run: {done_epochs}/{epochs_total} epochs done · ETA "
                        f"{fmt_seconds(batch['eta_run_s'])} (early stopping may end it sooner)")
        else:
            st.progress(0.0, text="Building the model and starting…")
        if status.get("message"):
            st.caption(md(status["message"]))
    else:
        show = {RunStatus.FINISHED: st.success, RunStatus.FAILED: st.error}.get(
            state, st.warning if state in runs.FINAL else st.info)
        show(md(status.get("message") or state.capitalize()))
    for warning in snap["warnings"]:
        st.warning(warning.message, icon=":material/warning:")


status_view(job.run_id, active, len(history))
if not history.empty:
    g1, g2 = st.columns(2)
    g1.plotly_chart(charts.training_curve_figure(history, "loss"), key="train_loss")
    g2.plotly_chart(charts.training_curve_figure(history, "accuracy"), key="train_acc")
elif active:
    st.caption("The loss and accuracy curves appear when the first epoch ends.")
insight.sample_strip(user, job.request.dataset, job.owner, job.events.latest_samples,
                     runs.load_config(job.run_dir).get("class_names", []), active)

# ---------------------------------------------------------------- results
# From `active`, not a second job.done(): a run that ends while this script runs would
# show its results under a status still reading "running"; the next poll draws both.
metrics = None if active else runs.load_metrics(job.run_dir)
if metrics:
    # First, before the slow charts: leaving the page stops this script where it is.
    state.select_run(job.run_dir)  # Predict and Runs open this run by default
    st.subheader("Test set")
    hist = history
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Test accuracy", f"{metrics['test_accuracy']:.2%}")
    m2.metric("Test loss", f"{metrics['test_loss']:.4f}")
    if "val_accuracy" in hist and not hist.empty:
        m3.metric("Best validation accuracy", f"{hist['val_accuracy'].max():.2%}")
    m4.metric("Time", fmt_seconds(runs.load_status(job.run_dir).get("seconds")))
    names = metrics["class_names"]
    t1, t2 = st.tabs(["Confusion matrix", f"Most confident mistakes ({len(metrics['mistakes'])})"])
    with t1:
        insight.confusion_chart("train", job.run_id, metrics)
        insight.cell_examples_section(user, "train", job.run_id, job.run_dir,
                                      job.request.dataset, job.owner, metrics)
    with t2:
        if metrics["mistakes"]:
            st.caption("true → predicted (confidence): the errors the model was surest about.")
            try:
                x_test = cached_dataset(job.request.dataset).x_test
            except DatasetUnavailable as exc:
                st.info(f"The mistakes' images are not shown: {md(exc)}")
            else:
                st.plotly_chart(charts.mistakes_figure(x_test, metrics["mistakes"], names),
                                key="train_mistakes")
        else:
            st.success("No mistakes on the test set.")
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    c1.caption("Open **Draw & predict** to try this model on your own drawing.")
    if c2.button("Draw & predict", icon=":material/draw:", key="train_to_predict",
                 width="stretch"):
        st.switch_page("pages/predict.py", query_params={"run": job.run_id})

# ---------------------------------------------------------------- resume
resumable = [r for r in runs.list_runs(manager.root)
             if r.status.get("status") in RESUMABLE
             and access.can_manage(user, access.owner_of(r.config))
             and callbacks.read_checkpoint(r.run_dir) is not None]
if resumable:
    with st.expander(f"Resume a run ({len(resumable)} interrupted, stopped or failed)"):
        pick = st.selectbox("Run", [r.run_id for r in resumable], key="train_resume_pick")
        run = next(r for r in resumable if r.run_id == pick)
        done_epochs = callbacks.read_checkpoint(run.run_dir)["epoch"]
        planned = training.total_epochs(training.request_from_config(run.config))
        st.caption(f"{done_epochs} of {planned} epochs done · {md(run.status.get('message', ''))}")
        more = st.number_input("Train up to epoch", min_value=done_epochs + 1,
                               max_value=manager.budgets.max_epochs,
                               value=min(max(planned, done_epochs + 1),
                                         manager.budgets.max_epochs),
                               key="train_resume_epochs")
        if st.button("Resume from the last epoch", key="train_resume",
                     help="Continues with the same weights, optimizer state and learning-rate "
                          "schedule; the curves carry on."):
            try:
                rjob = manager.resume(run.run_dir, cached_dataset(run.dataset),
                                      epochs=int(more), user=user)
            except (ValueError, DatasetUnavailable) as exc:
                st.error(md(exc))
            else:
                state.show_training_run(rjob.run_id)
                st.rerun()
