"""A challenge's images, in two parts that never meet: the visible set and the hidden split.

The **hidden split** scores submissions: the registry set's own test set, or a seeded,
stratified share of an upload. The **visible set** is everything else, under the data
set name ``challenge:<id>``: its training images are the source's training images (for an
upload, what the hidden share leaves) and its test set, which Explore, a run's
predictions, mistakes, downloads and the CLI show, is a seeded, stratified share carved
out of those. Pages, the CLI and training only ever get ``visible``; ``hidden_npz`` is
called by the engine when it ships a submission to a scoring worker.

Fashion-MNIST's test set ships with Keras, so for a registry set "hidden" means the lab
never shows or serves it inside the challenge; an upload's hidden share exists only here.

Example::

    ds = visible(root, challenge)       # Dataset "challenge:<id>": train on it, look at it
    path = hidden_npz(root, challenge)  # the engine's: the worker scores on it
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.data import datasets
from cnnlab.data.datasets import Dataset, DatasetInfo
from cnnlab.runs import store as runs
from cnnlab.runs.challenges import HIDDEN_FILE, SOURCE_FILE, Challenge, folder

VISIBLE_TEST_SHARE = 0.1  # of the training pool: the students' own test set


def source(root: Path | str, challenge: Challenge) -> Dataset:
    """The challenge's source data set: the registry set, or the kept upload."""
    if challenge.source in datasets.REGISTRY:
        return datasets.load(challenge.source)
    path = folder(root, challenge.id) / SOURCE_FILE
    if not path.is_file():
        raise datasets.DatasetUnavailable(
            f"The images of challenge {challenge.name!r} are missing from the server; ask "
            "the teacher to set it again.")
    return datasets.from_npz(path)


def _pool_and_hidden(challenge: Challenge, src: Dataset
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_pool, y_pool, x_hidden, y_hidden): what students may train on, what scores."""
    if challenge.source in datasets.REGISTRY:
        return src.x_train, src.y_train, src.x_test, src.y_test
    x = np.concatenate([src.x_train, src.x_test])
    y = np.concatenate([src.y_train, src.y_test])
    return datasets.train_val_split(x, y, challenge.hidden_share, seed=challenge.seed)


def info(challenge: Challenge, src_info: DatasetInfo | None = None) -> DatasetInfo:
    """The visible set's facts: its name is ``challenge:<id>``; no Keras module (an
    exported script cannot rebuild the challenge's split from keras.datasets)."""
    return DatasetInfo(challenge.dataset_name, f"Challenge: {challenge.name}",
                       tuple(challenge.class_names), challenge.image_shape,
                       digits=bool(src_info and src_info.digits))


def split(challenge: Challenge, src: Dataset) -> tuple[Dataset, Dataset]:
    """(visible, hidden) from the source: ``hidden`` holds its images as its test set and
    no training images."""
    x_pool, y_pool, x_hidden, y_hidden = _pool_and_hidden(challenge, src)
    x_tr, y_tr, x_te, y_te = datasets.train_val_split(x_pool, y_pool, VISIBLE_TEST_SHARE,
                                                      seed=challenge.seed + 1)
    visible_set = Dataset(info(challenge, src.info), x_tr, y_tr, x_te, y_te)
    hidden_info = DatasetInfo(f"{challenge.dataset_name}:hidden", "Hidden test split",
                              tuple(challenge.class_names), challenge.image_shape)
    hidden_set = Dataset(hidden_info, x_hidden[:0], y_hidden[:0], x_hidden, y_hidden)
    return visible_set, hidden_set


def visible(root: Path | str, challenge: Challenge) -> Dataset:
    """The data set ``challenge:<id>``: what students train on, look at and test on."""
    return split(challenge, source(root, challenge))[0]


def hidden_npz(root: Path | str, challenge: Challenge) -> Path:
    """The hidden split as an .npz in the challenge's folder (written once), for the
    scoring worker (a remote worker gets the file's bytes, as an upload's)."""
    path = folder(root, challenge.id) / HIDDEN_FILE
    if not path.is_file():
        runs.write_bytes(path, datasets.to_npz_bytes(split(challenge, source(root, challenge))[1]))
    return path
