"""Runs page: every training run in a sortable, filterable table; overlay the curves, scores
and config differences of several runs; one run's evaluation, downloads and management
(rename, delete, load into Configure, resume).

Run ids from the URL (``?run=<id>``) or session state are checked with cnnlab.runs before
any file is touched, so no id or name can reach outside the runs root.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from cnnlab import access, callbacks, charts, compare, runs
from cnnlab.config import PRESETS, ConfigError, ModelConfig
from cnnlab.datasets import DatasetUnavailable
from cnnlab.models import to_keras_script
from cnnlab.training import tensorboard_dir
from pages.common import cached_dataset, engine, fmt_seconds
from pages.signin import current_user, md

RESUMABLE = ("interrupted", "stopped", "failed", "time limit")


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


def url_run(root: Path, ids: list[str]) -> str | None:
    """The run asked for in the address (``?run=<id>``), if it is safe and known.

    An id that would leave the runs root is refused with an error, never opened.
    """
    wanted = st.query_params.get("run")
    if not wanted:
        return None
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
    """The run picked on another page (session state "selected_run"), if it is one of ours."""
    chosen = st.session_state.get("selected_run")
    try:
        return runs.check_inside(root, chosen).name if chosen else None
    except runs.RunPathError:
        return None  # a run of another runs root


user = current_user()  # class mode: everyone reads runs; owners and teachers change them
class_mode = access.load_settings().class_mode
def teacher_panel(rows: list[dict]) -> None:
    """Teachers: the queue with its owners and each person's use of the server."""
    with st.expander("👩‍🏫 Class: the queue and who uses the server"):
        jobs_now = [(j, "training") for j in manager.running()] + [
            (j, f"queued #{n}") for n, j in enumerate(manager.queued(), 1)]
        if jobs_now:
            st.dataframe(pd.DataFrame(
                [{"run_id": j.run_id, "owner": j.owner, "state": state} for j, state in jobs_now]),
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


st.title("📊 Runs")
root = runs.default_root().resolve()
where = f" in `{root}`" if user.is_teacher else ""  # students never see server paths
manager = engine()  # also marks runs left "running" by a dead server as interrupted

flash = st.session_state.pop("runs_flash", None)
if flash:
    st.success(md(flash))

all_runs = runs.list_runs(root)
if not all_runs:
    st.info(f"No runs yet{where}. Train a model on the **Train** page (the `quick` preset "
            "with *Limit training samples* takes seconds); every run lands here to compare.")
    if st.button("🏋️ Go to Train", key="runs_go_train"):
        st.switch_page("pages/train.py")
    st.stop()

rows = [compare.run_row(r) for r in all_runs]
if user.is_teacher and class_mode:
    teacher_panel(rows)
if class_mode:
    # Students start with their own runs; "Everyone" reads all (a link to another person's
    # run switches to it once).
    if st.query_params.get("run") in {r["run_id"] for r in rows if r["owner"] != user.name}:
        if st.session_state.get("runs_scope_for") != st.query_params.get("run"):
            st.session_state["runs_scope"] = "Everyone"
            st.session_state["runs_scope_for"] = st.query_params.get("run")
    st.session_state.setdefault("runs_scope", "Everyone" if user.is_teacher else "Mine")
    scope = st.radio("Show", ["Mine", "Everyone"], key="runs_scope", horizontal=True)
    if scope != "Everyone":
        rows = [r for r in rows if r["owner"] == user.name]
    if not rows:
        st.info("You have no runs yet. Train one on the **Train** page, or choose "
                "**Everyone** to read the class's runs.")
        st.stop()
by_id = {r["run_id"]: r for r in rows}
info_by_id = {r.run_id: r for r in all_runs}
labels = labels_for(rows)
table = pd.DataFrame(rows)

# ---------------------------------------------------------------- table with filters
f1, f2, f3 = st.columns([2, 1, 1])
query = f1.text_input("Search", placeholder="name, id, model…", key="runs_search")
sets = f2.multiselect("Data set", sorted(table["dataset"].unique()), key="runs_filter_dataset")
states = f3.multiselect("Status", sorted(table["status"].unique()), key="runs_filter_status")
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
for col in ("best_val_accuracy", "test_accuracy"):  # as percent numbers: one decimal, sortable
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

# ---------------------------------------------------------------- compare several runs
st.subheader("Compare runs")
comparable = [r["run_id"] for r in rows if runs.HISTORY_FILE not in r["problem"]]
# Start with the newest three; later drop runs that were deleted or became damaged.
st.session_state["runs_compare"] = [
    i for i in st.session_state.get("runs_compare", comparable[:3]) if i in comparable]
picked = st.multiselect("Runs to compare", comparable, format_func=labels.get,
                        key="runs_compare", placeholder="Pick two or more runs")
if picked:
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

# ---------------------------------------------------------------- one run
st.divider()
ids = [r["run_id"] for r in rows]
asked = url_run(root, ids)
if asked and st.session_state.get("runs_pick_from") != asked:
    st.session_state["runs_pick"] = asked  # a new address wins once; then the user's choice
    st.session_state["runs_pick_from"] = asked
if st.session_state.get("runs_pick") not in ids:
    picked_elsewhere = session_run(root, ids)
    st.session_state["runs_pick"] = picked_elsewhere if picked_elsewhere in ids else ids[0]
run_id = st.selectbox("Run details", ids, key="runs_pick",
                      format_func=lambda i: f"{labels[i]} — {i}")
# Keep the address in step with the pick, so it can be bookmarked or shared.
st.query_params["run"] = st.session_state["runs_pick_from"] = run_id
row = by_id[run_id]
run_dir = info_by_id[run_id].run_dir
st.session_state["selected_run"] = str(run_dir)
status = info_by_id[run_id].status if isinstance(info_by_id[run_id].status, dict) else {}
config = runs.load_config(run_dir)
config = config if isinstance(config, dict) else {}
history = pd.DataFrame() if runs.HISTORY_FILE in row["problem"] else runs.load_history(run_dir)
metrics = runs.load_metrics(run_dir)
metrics = metrics if isinstance(metrics, dict) and "confusion" in metrics else None

st.subheader(md(row["name"]))
st.caption(f"`{run_id}` · {md(row['dataset'])} · {md(row['model'])} · "
           f"{md(row['device'] or 'no device')}")
if row["problem"]:
    st.error(f"This run is damaged: {md(row['problem'])}")
message = status.get("message")
if message:
    state = status.get("status")
    show = {"finished": st.success, "failed": st.error}.get(state, st.info)
    show(f"**{md(state)}** · {md(message)}")

m1, m2, m3, m4 = st.columns(4)
m1.metric("Test accuracy", f"{row['test_accuracy']:.2%}" if row["test_accuracy"] is not None
          else "–")
m2.metric("Best val accuracy", f"{row['best_val_accuracy']:.2%}"
          if row["best_val_accuracy"] is not None else "–")
m3.metric("Parameters", f"{row['params']:,.0f}" if row["params"] is not None else "–")
m4.metric("Time", fmt_seconds(row["seconds"]))

tab_eval, tab_files, tab_manage = st.tabs(["Evaluation", "Downloads", "Manage"])

with tab_eval:
    if not history.empty:
        g1, g2 = st.columns(2)
        g1.plotly_chart(charts.training_curve_figure(history, "loss", height=260),
                        width="stretch", key="runs_loss")
        g2.plotly_chart(charts.training_curve_figure(history, "accuracy", height=260),
                        width="stretch", key="runs_acc")
    if metrics is None:
        st.info("No test-set evaluation for this run (it did not finish, or metrics.json is "
                "missing).")
    else:
        names = [str(n) for n in metrics.get("class_names", [])]
        e1, e2 = st.columns([3, 2], gap="large")
        with e1:
            st.markdown("**Confusion matrix** (rows: true class)")
            st.plotly_chart(charts.confusion_figure(metrics["confusion"], names),
                            width="stretch", key="runs_confusion")
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
            else:
                if all(0 <= m["index"] < len(x_test) for m in mistakes):
                    st.caption("true → predicted (confidence): the errors the model was surest "
                               "about.")
                    st.plotly_chart(charts.mistakes_figure(x_test, mistakes, names),
                                    width="stretch", key="runs_mistakes")
                else:
                    st.info("metrics.json does not match this data set's test images.")

with tab_files:
    best = runs.best_model_path(run_dir)
    files = [
        ("best.keras", best, "application/octet-stream", "the best checkpoint (Keras 3)"),
        ("history.csv", run_dir / runs.HISTORY_FILE, "text/csv", "loss and accuracy per epoch"),
        ("config.json", run_dir / runs.CONFIG_FILE, "application/json",
         "model and training settings"),
    ]
    cols = st.columns(4)
    for col, (fname, path, mime, what) in zip(cols, files, strict=False):
        exists = path.is_file()
        # Deferred read: the bytes are loaded only when the button is clicked.
        col.download_button(
            f"⬇️ {fname}", data=(lambda p=path: p.read_bytes()) if exists else b"",
            file_name=f"{run_id}-{fname}", mime=mime, disabled=not exists,
            key=f"runs_dl_{fname}", width="stretch",
            help=what if exists else f"{fname} is missing in this run's folder.",
        )
    script = None
    try:
        model_cfg = ModelConfig.from_dict(config.get("model"))
        shape = tuple(config["input_shape"])
        script = to_keras_script(model_cfg, shape, int(config["n_classes"]), row["dataset"])
    except (ConfigError, KeyError, TypeError, ValueError):
        script = None
    cols[3].download_button(
        "⬇️ Keras script", data=script or "", file_name=f"{run_id}.py", mime="text/x-python",
        disabled=script is None, key="runs_dl_script", width="stretch",
        help="A standalone Python script that builds and trains the same model in plain Keras"
        if script else "config.json is missing or unreadable, so no script can be written.",
    )
    logs = tensorboard_dir(run_dir)
    if logs.is_dir() and user.is_teacher:  # a server path: not for students
        st.caption("TensorBoard logs of this run (ticked on Train): view them with")
        st.code(f"tensorboard --logdir {logs}", language="bash")

with tab_manage:
    state = status.get("status")
    active = state in runs.ACTIVE
    mine = access.can_manage(user, row["owner"])
    if not mine:
        st.info(f"This is {md(row['owner'])}'s run: you can read it and load its settings "
                "into Configure; only they or a teacher can rename, resume, fine-tune or "
                "delete it.")
    a1, a2 = st.columns(2, gap="large")
    with a1:
        if mine:
            st.markdown("**Rename**")
            new_name = st.text_input("New name", value=row["name"],
                                     key=f"runs_rename_{run_id}", max_chars=runs.NAME_MAX)
            if st.button("Rename", key="runs_rename"):
                try:
                    runs.rename_run(root, run_id, new_name, user)
                except (runs.RunPathError, access.AccessDenied) as exc:
                    st.error(md(exc))
                else:
                    st.session_state["runs_flash"] = f"Renamed to “{new_name.strip()}”."
                    st.rerun()
    with a2:
        st.markdown("**Use this model**")
        if st.button("🧱 Load into Configure", key="runs_to_configure",
                     disabled=runs.CONFIG_FILE in row["problem"]):
            try:
                loaded = ModelConfig.from_dict(config.get("model"))
            except ConfigError as exc:
                st.error(f"Cannot load this run's config: {md(exc)}")
            else:
                preset = config.get("preset")
                st.session_state["model_config"] = loaded
                st.session_state["preset_name"] = preset if preset in PRESETS else "custom"
                if preset in PRESETS:
                    st.session_state["cfg_preset"] = preset
                st.session_state["cfg_version"] = st.session_state.get("cfg_version", 0) + 1
                st.session_state["dataset_name"] = row["dataset"]
                st.switch_page("pages/configure.py")
        if mine and state in RESUMABLE:
            checkpoint = callbacks.read_checkpoint(run_dir)
            if st.button("▶️ Resume from the last epoch", key="runs_resume",
                         disabled=checkpoint is None,
                         help="Same weights, optimizer state and schedule, from the last "
                              "whole epoch, up to the planned epochs." if checkpoint else
                              "This run has no resumable checkpoint (last.keras)."):
                try:
                    job = manager.resume(run_dir, cached_dataset(row["dataset"]), user=user)
                except (ValueError, DatasetUnavailable, KeyError) as exc:
                    st.error(f"Cannot resume: {md(exc)}")
                else:
                    st.session_state["train_run_id"] = job.run_id
                    st.session_state["dataset_name"] = row["dataset"]  # Train shows its set
                    st.switch_page("pages/train.py")
        if mine and not active and best.is_file():
            if st.button("🔁 Fine-tune from best", key="runs_finetune",
                         help="A new run that starts from this run's best weights with a fresh "
                              "optimizer; this run stays as it is."):
                try:
                    job = manager.fine_tune(run_dir, cached_dataset(row["dataset"]),
                                            epochs=int(config.get("epochs") or 1),
                                            user=user)
                except (ValueError, DatasetUnavailable, KeyError) as exc:
                    st.error(f"Cannot fine-tune: {md(exc)}")
                else:
                    st.session_state["train_run_id"] = job.run_id
                    st.session_state["dataset_name"] = row["dataset"]
                    st.switch_page("pages/train.py")

    pending = st.session_state.get("runs_delete_pending")
    if mine:
        st.markdown("**Delete**")
    if mine and active:
        st.caption(f"This run is {state}: stop it on the Train page before deleting it.")
    elif mine and pending != run_id:
        if st.button("🗑️ Delete this run…", key="runs_delete"):
            st.session_state["runs_delete_pending"] = run_id
            st.rerun()
    elif mine:
        st.warning(f"Delete **{md(row['name'])}** (`{run_id}`) and all its files? This cannot be "
                   "undone.")
        d1, d2, _ = st.columns([1, 1, 3])
        if d1.button("Yes, delete", type="primary", key="runs_delete_confirm"):
            st.session_state.pop("runs_delete_pending", None)
            try:
                runs.delete_run(root, run_id, user)
            except (runs.RunPathError, ValueError, OSError) as exc:
                st.error(f"Could not delete: {md(exc)}")
            else:
                st.session_state.pop("selected_run", None)
                st.query_params.pop("run", None)
                st.session_state["runs_flash"] = f"Deleted run {run_id}."
                st.rerun()
        if d2.button("Cancel", key="runs_delete_cancel"):
            st.session_state.pop("runs_delete_pending", None)
            st.rerun()
