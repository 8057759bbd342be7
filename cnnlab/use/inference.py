"""Trained models for prediction: loading a run's model, fast inference, a run's classes.

The lab's own run checkpoints load directly; an uploaded file goes through
``cnnlab.uploads.model_check.load_model_file`` (static check, child-process load) first.

Inference calls the model directly (``model(x, training=False)``): ``model.predict`` sets up
a data pipeline on every call and costs ~50 ms more per drawing. Keras is imported inside
functions so pages that import this module still open fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.data import datasets
from cnnlab.runs import store as runs
from cnnlab.uploads import model_check, safe_load
from cnnlab.uploads.model_files import ModelRejected

if TYPE_CHECKING:
    import keras

# Runs on these suit the drawing canvas (a fact on each DatasetInfo).
DIGIT_DATASETS = tuple(name for name, info in datasets.REGISTRY.items() if info.digits)


def input_scale(model: keras.Model) -> float:
    """The factor from [0, 1] pixels to what ``model`` expects: 255 or 1.

    Every cnnlab model starts with Rescaling(1/255) and takes raw 0..255 pixels. A user's
    own model may not: if no Rescaling layer comes before its first layer with weights,
    we assume it was trained on [0, 1] inputs (the usual Keras tutorial habit).
    """
    import keras

    for layer in _flat_layers(model):
        if isinstance(layer, keras.layers.Rescaling):
            return 255.0
        if layer.weights:
            break
    return 1.0


def _flat_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers in order, with nested models (a Sequential inside a Model) opened up."""
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_flat_layers(layer))
        else:
            out.append(layer)
    return out


def load_run_model(path: Path | str) -> keras.Model:
    """Load a checkpoint this lab wrote into its runs folder (trusted: no child check)."""
    from cnnlab.model import backbones

    backbones.register()  # a pretrained-backbone run's input layer is a cnnlab class
    return safe_load.read_model(path)


Forward = Callable[[np.ndarray], Any]  # a batch in, numpy out (a list for several outputs)


def compiled_forward(model: keras.Model) -> Forward:
    """``model``'s inference-mode forward pass as a compiled function of the backend.

    Calling a Keras model eagerly costs about 10 ms of Python per call on this CPU for a
    model that computes in 2 (bench/latency.py). TensorFlow: one ``tf.function`` with a
    fixed input signature (any batch size), so a drawing never retraces. JAX: ``jax.jit``
    over ``stateless_call`` with the weights as arguments (one trace per batch shape).
    Other backends: the eager call. Returns numpy arrays (a list for several outputs).
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
        traced = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return lambda x: keras.tree.map_structure(np.asarray, traced(x))
    if backend == "jax":
        import jax

        weights = ([v.value for v in model.trainable_variables],
                   [v.value for v in model.non_trainable_variables])

        @jax.jit
        def run(trainable: Any, non_trainable: Any, x: Any) -> Any:
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        return lambda x: keras.tree.map_structure(np.asarray, run(*weights, x))
    return lambda x: keras.tree.map_structure(keras.ops.convert_to_numpy,
                                              model(x, training=False))


@dataclass
class Predictor:
    """A loaded model ready for fast single-image inference and for looking inside."""

    model: keras.Model
    input_shape: tuple[int, int, int] = field(init=False)
    n_classes: int = field(init=False)
    scale: float = field(init=False)

    def __post_init__(self) -> None:
        h, w, c = (int(v) for v in self.model.inputs[0].shape[1:])  # checked by model_problems
        self.input_shape = (h, w, c)
        self.n_classes = int(self.model.outputs[0].shape[-1])
        self.scale = input_scale(self.model)
        self._lock = threading.Lock()
        self._features: tuple[list[str], Forward | None] | None = None
        self._forward = compiled_forward(self.model)
        self._forward(np.zeros((1, h, w, c), np.float32))  # trace now, not at the first stroke

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for one input ``(h, w, c)`` or a batch, from [0, 1] pixels."""
        batch = np.asarray(x, np.float32)
        single = batch.ndim == 3
        if single:
            batch = batch[None]
        out = self._forward(batch * np.float32(self.scale))
        return out[0] if single else out

    def _feature_model(self) -> tuple[list[str], Forward | None]:
        """(conv layer names, the compiled sub-model returning their activations); built
        once."""
        import keras

        with self._lock:
            if self._features is None:
                layers = _flat_layers(self.model)
                names, outputs = [], []
                for i, layer in enumerate(layers):
                    if not isinstance(layer, keras.layers.Conv2D):
                        continue
                    # Show the activation the next block sees: after a following
                    # BatchNormalization/Activation when the conv itself is linear.
                    last = layer
                    for nxt in layers[i + 1 :]:
                        if not isinstance(nxt, keras.layers.BatchNormalization
                                          | keras.layers.Activation | keras.layers.ReLU):
                            break
                        last = nxt
                    names.append(layer.name)
                    outputs.append(last.output)
                sub = keras.Model(self.model.inputs[0], outputs) if outputs else None
                self._features = (names, compiled_forward(sub) if sub is not None else None)
        return self._features

    def feature_maps(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(layer name, activations (h, w, channels)) of every conv layer for one input."""
        names, sub = self._feature_model()
        if sub is None:
            return []
        outs = sub(np.asarray(x, np.float32)[None] * np.float32(self.scale))
        if not isinstance(outs, list | tuple):
            outs = [outs]
        return [(n, np.asarray(o)[0]) for n, o in zip(names, outs, strict=True)]

    def first_filters(self) -> np.ndarray | None:
        """The first conv layer's kernels as ``(n_filters, kh, kw, in_channels)``, or None."""
        import keras

        for layer in _flat_layers(self.model):
            if isinstance(layer, keras.layers.Conv2D):
                kernel = keras.ops.convert_to_numpy(layer.kernel)
                return np.transpose(kernel, (3, 0, 1, 2))
        return None


def run_class_names(run_dir: Path | str, n_classes: int | None = None) -> tuple[str, ...]:
    """Class names of a run: config.json, else its data set's registry entry, else numbers."""
    cfg = runs.load_config(run_dir)
    names = cfg.get("class_names")
    if not names:
        info = datasets.REGISTRY.get(run_dataset(run_dir) or "")
        names = info.class_names if info else None
    if not names:
        names = [str(i) for i in range(n_classes or 0)]
    return tuple(str(n) for n in names)


def run_dataset(run_dir: Path | str) -> str | None:
    """The data set name a run was trained on (status.json, else config.json)."""
    return runs.load_status(run_dir).get("dataset") or runs.load_config(run_dir).get("dataset")


def load_run_predictor(run_dir: Path | str) -> Predictor:
    """A Predictor for a run's best checkpoint; ModelRejected when there is none usable."""
    path = runs.best_model_path(run_dir)
    if not path.is_file():
        raise ModelRejected(
            f"Run {Path(run_dir).name} has no best.keras yet; wait for its first epoch to "
            "finish or pick another run."
        )
    return Predictor(load_run_model(path))


def predictable_runs(root: Path | str | None = None) -> list[runs.RunInfo]:
    """Runs with a saved model, best first: finished digit runs by test accuracy, then the
    other finished runs by accuracy, then unfinished ones with a checkpoint (newest first)."""

    def rank(run: runs.RunInfo) -> tuple[int, int, float]:
        metrics = runs.load_metrics(run.run_dir) or {}
        finished = run.status.get("status") == runs.RunStatus.FINISHED
        digits = run.dataset in DIGIT_DATASETS
        return (not finished, not digits, -float(metrics.get("test_accuracy") or 0.0))

    usable = [r for r in runs.list_runs(root) if runs.best_model_path(r.run_dir).is_file()]
    return sorted(usable, key=rank)  # stable: list_runs is newest first


def predict_file(run_dir: Path | str, image_path: Path | str) -> dict[str, Any]:
    """Classify one image file with a run's best model (the CLI's ``predict --run``)."""
    predictor = load_run_predictor(run_dir)
    return predict_image(predictor, run_class_names(run_dir, predictor.n_classes), image_path)


def predict_model_file(model_path: Path | str, image_path: Path | str) -> dict[str, Any]:
    """Classify one image file with a ``.keras`` file from anywhere (``predict --model``).

    The file is untrusted, so it is checked exactly as an upload on Draw & predict is
    (declared size, a child-process load under a memory ceiling; ModelRejected otherwise).
    It carries no class names: its classes are numbered.
    """
    predictor = Predictor(model_check.load_model_file(model_path))
    names = tuple(str(i) for i in range(predictor.n_classes))
    return predict_image(predictor, names, image_path)


def predict_image(predictor: Predictor, class_names: Sequence[str], image_path: Path | str
                  ) -> dict[str, Any]:
    """Label, class name, probabilities and ms of one image file (ValueError if unreadable).

    ``ms`` is preprocessing plus inference for this image, after one warm-up call, so it
    shows the steady cost per image rather than model loading.
    """
    from cnnlab.data.preprocess import image_to_input, open_image

    image = open_image(Path(image_path).read_bytes(), Path(image_path).name)  # ValueError
    predictor.probabilities(np.zeros(predictor.input_shape, np.float32))  # warm-up
    t0 = time.perf_counter()
    probs = predictor.probabilities(image_to_input(image, predictor.input_shape))
    ms = (time.perf_counter() - t0) * 1000
    label = int(np.argmax(probs))
    return {
        "label": label,
        "class_name": class_names[label] if label < len(class_names) else str(label),
        "probabilities": [round(float(p), 6) for p in probs],
        "ms": round(ms, 2),
    }
