"""Build cnnlab/data/mnist_sample.npz: a stratified 6,000 / 1,000 sample of the real MNIST.

Run from the repository root with KERAS_HOME pointing at a Keras cache that holds the four
MNIST IDX files (datasets/mnist/*.gz), e.g.::

    KERAS_HOME=../shared/keras python scripts/make_mnist_sample.py

The npz also stores which rows of the real train/test sets were taken (train_index,
test_index), so tests can check the sample really comes from MNIST.
"""

from __future__ import annotations

import numpy as np

from cnnlab.data import datasets

SEED = 2024
N_TRAIN, N_TEST = 6_000, 1_000


def stratified_indices(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` row indices with each class in its proportion in ``y``, sorted."""
    labels, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    # Hand the rounding remainder to the classes with the largest fractional parts.
    frac = counts / counts.sum() * n - quota
    quota[np.argsort(-frac)[: n - quota.sum()]] += 1
    picked = [rng.choice(np.flatnonzero(y == c), size=q, replace=False)
              for c, q in zip(labels, quota, strict=True)]
    return np.sort(np.concatenate(picked))


def main() -> None:
    """Load the real MNIST, draw the sample with a fixed seed, write the compressed npz."""
    ds = datasets.load("mnist")
    rng = np.random.default_rng(SEED)
    tr = stratified_indices(ds.y_train, N_TRAIN, rng)
    te = stratified_indices(ds.y_test, N_TEST, rng)
    datasets.SAMPLE_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        datasets.SAMPLE_PATH,
        x_train=ds.x_train[tr], y_train=ds.y_train[tr],
        x_test=ds.x_test[te], y_test=ds.y_test[te],
        train_index=tr.astype(np.int32), test_index=te.astype(np.int32),
    )
    size = datasets.SAMPLE_PATH.stat().st_size
    print(f"wrote {datasets.SAMPLE_PATH} ({size:,} bytes): {len(tr)} train, {len(te)} test")


if __name__ == "__main__":
    main()
