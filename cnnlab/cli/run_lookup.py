"""Finding a run for ``cnnlab runs …``: the runs folder, a run by id or unique prefix,
its readable config.json and the data set to train or test it on.

An id given on the command line is only compared with the listed run ids, so no path is
ever made from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.cli.common import CliError

if TYPE_CHECKING:
    from cnnlab.data.datasets import Dataset
    from cnnlab.runs.store import RunInfo


def runs_root(args: argparse.Namespace) -> Path:
    """``--runs-dir``, else the app's default (``CNNLAB_RUNS_DIR``, else ``runs/``)."""
    from cnnlab.runs import store as runs

    return Path(args.runs_dir) if args.runs_dir else runs.default_root()


def find_run(root: Path, given: str) -> RunInfo:
    """The run whose id is ``given`` or starts with it; CliError naming the candidates."""
    from cnnlab.runs import store as runs

    # ``given`` is only compared with the listed ids: no path is ever made from it.
    found = runs.list_runs(root)
    exact = [r for r in found if r.run_id == given]
    matches = exact or [r for r in found if r.run_id.startswith(given)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        near = ", ".join(r.run_id for r in found[:5]) or "none yet"
        raise CliError(f"there is no run {given!r} in {root} (newest: {near}); see "
                       f"`cnnlab runs list --runs-dir {root}`.")
    ids = ", ".join(r.run_id for r in matches)
    raise CliError(f"{given!r} is the start of {len(matches)} runs ({ids}); give more of "
                   "the id.")


def readable_config(info: RunInfo) -> dict[str, Any]:
    """The run's config.json, or CliError when it is damaged (the page's check)."""
    from cnnlab.runs import store as runs

    problems = [p for p in runs.run_problems(info.run_dir) if p.startswith(runs.CONFIG_FILE)]
    if problems:
        raise CliError(f"run {info.run_id} is damaged: {problems[0]}")
    return runs.load_config(info.run_dir)


def dataset_for(info: RunInfo, config: dict[str, Any], wanted: str | None) -> Dataset:
    """``--dataset`` (a registry name, a class data set or a zip of class folders), else
    the run's own set."""
    from cnnlab.data import datasets, shared_sets

    name = wanted or str(config.get("dataset") or "")
    if name.startswith("challenge:"):  # a challenge's visible set: never its hidden split
        return challenge_dataset(info.run_dir.parent, name)
    if name.lower().endswith(".zip"):
        path = Path(name)
        shape = list(config.get("input_shape") or (64, 64, 3))
        try:
            return datasets.load_zip(path.read_bytes(), (int(shape[0]), int(shape[1])),
                                     int(shape[-1]) == 1,
                                     name=f"{datasets.UPLOAD_PREFIX}{path.name}")
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except datasets.BadUpload as exc:
            raise CliError(str(exc)) from exc
    if shared_sets.is_shared(name):
        try:
            return shared_sets.load(name)
        except shared_sets.SharedSetError as exc:
            raise CliError(str(exc)) from exc
    if name.startswith(datasets.UPLOAD_PREFIX):
        raise CliError(f"run {info.run_id} was trained on the uploaded pictures "
                       f"{name[len(datasets.UPLOAD_PREFIX):]!r}: give that zip again with "
                       "--dataset PATH.zip.")
    try:
        return datasets.load(name)
    except (datasets.DatasetUnavailable, KeyError) as exc:
        raise CliError(str(exc).strip("'\"")) from exc


def challenge_dataset(root: Path, name: str) -> Dataset:
    """The data set ``challenge:<id>`` of the runs root ``root``: its visible part only
    (cnnlab.runs.challenge_data); CliError when there is no such challenge."""
    from cnnlab.data.datasets import DatasetUnavailable
    from cnnlab.runs import challenge_data, challenges

    try:
        challenge = challenges.load(root, challenges.id_of(name) or "")
        return challenge_data.visible(root, challenge)
    except (challenges.ChallengeError, DatasetUnavailable) as exc:
        raise CliError(str(exc)) from exc
