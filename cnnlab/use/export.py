"""A run's best model in formats other programs load: TensorFlow SavedModel and TFLite.

``prepare_exports`` writes, into the run's ``export/`` folder, a zipped SavedModel, a
float32 TFLite model and a dynamic-range int8 TFLite model (weights stored as int8,
about 4× smaller), and checks that each TFLite model gives the same label as the Keras
model on test images. A ``manifest.json`` written last records the sizes, the agreement
and which ``best.keras`` they came from, so ``load_exports`` finds them again cheaply and
notices when a resumed run has replaced the model.

Export is TensorFlow-only: both formats are TensorFlow's, so under another Keras backend
every function here raises ExportUnavailable. TensorFlow is imported inside functions.

Example:
    files = prepare_exports(run_dir, dataset.x_test[:100])
    for f in files:
        print(f.file_name, f.size, f.agreement)
"""

from __future__ import annotations

import json
import tempfile
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.data.datasets import Progress
from cnnlab.runs import store as runs

if TYPE_CHECKING:
    import keras

EXPORT_DIR = "export"
MANIFEST_FILE = "manifest.json"
SAVED_MODEL_ZIP = "saved_model.zip"
TFLITE_FLOAT = "model.tflite"
TFLITE_INT8 = "model_int8.tflite"
EXPORT_NAMES = (SAVED_MODEL_ZIP, TFLITE_FLOAT, TFLITE_INT8)
CHECK_IMAGES = 100  # test images each TFLite model is checked on
BATCH = 256  # images per call when labelling: bounded memory for any check size

# One conversion at a time in this process: each briefly holds the model several times over
# (graph tracing, the converter), so concurrent presses queue instead of stacking up.
_CONVERT_LOCK = threading.Lock()


class ExportUnavailable(RuntimeError):
    """Exports cannot be made here (not the TensorFlow backend); the message says why."""


@dataclass(frozen=True)
class ExportFile:
    """One prepared export: ``agreement`` is (agreeing, checked) for TFLite, else None."""

    file_name: str
    label: str
    mime: str
    size: int
    agreement: tuple[int, int] | None = None


def size_text(n: int) -> str:
    """A file size for people: 950 B, 111.6 KB, 1.4 MB (1 KB = 1024 bytes)."""
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GB"


def require_tensorflow() -> None:
    """Raise ExportUnavailable unless Keras runs on TensorFlow."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ExportUnavailable(
            f"Export to SavedModel and TFLite needs the TensorFlow backend of Keras; this "
            f"server runs KERAS_BACKEND={backend}. Start it with KERAS_BACKEND=tensorflow, "
            "or download best.keras and export it where TensorFlow runs.")


# ---------------------------------------------------------------- formats, one model each


def inference_model(model: keras.Model) -> keras.Model:
    """``model`` without its augmentation layers, sharing its weights.

    Random augmentation layers pass images through unchanged at inference, but their traced
    graph still holds random and image-transform ops that TFLite has no kernels for
    (StatelessRandomUniformV2, ImageProjectiveTransformV3). Only a plain chain of layers
    (every cnnlab model) is rebuilt; any other model is returned as it is.
    """
    import keras

    # Identity when not training (unlike RandomCrop, which centre-crops at inference).
    augment = (keras.layers.RandomFlip, keras.layers.RandomTranslation,
               keras.layers.RandomRotation, keras.layers.RandomZoom,
               keras.layers.RandomContrast, keras.layers.RandomBrightness,
               keras.layers.RandomErasing)
    layers = model.layers
    if not any(isinstance(layer, augment) for layer in layers):
        return model
    try:
        chain = (len(model.inputs) == 1 and isinstance(layers[0], keras.layers.InputLayer)
                 and all(after.input is before.output
                         for before, after in zip(layers, layers[1:], strict=False)))
    except (AttributeError, ValueError):  # a layer used twice has no single input
        chain = False
    if not chain:
        return model
    inputs = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype,
                         name=layers[0].name)
    x = inputs
    for layer in layers[1:]:
        if not isinstance(layer, augment):
            x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def _export_saved_model(model: keras.Model, folder: Path) -> None:
    """Write ``model`` for inference as a SavedModel (its ``serve`` endpoint) in ``folder``."""
    inference_model(model).export(str(folder), format="tf_saved_model", verbose=False)


def _zip_folder(folder: Path) -> bytes:
    """``folder`` zipped, its files under ``saved_model/`` so unzipping gives one folder."""
    with tempfile.TemporaryFile() as fh:
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zf.write(path, Path("saved_model") / path.relative_to(folder))
        fh.seek(0)
        return fh.read()


def _convert(saved_model: Path, quantize: bool) -> bytes:
    """A SavedModel folder as TFLite; ``quantize``: dynamic-range int8 weights."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return bytes(converter.convert())


def saved_model_zip(model_path: Path | str) -> bytes:
    """The ``.keras`` file at ``model_path`` as a zipped TensorFlow SavedModel."""
    from cnnlab.use.inference import load_run_model

    require_tensorflow()
    with tempfile.TemporaryDirectory() as tmp, _CONVERT_LOCK:
        _export_saved_model(load_run_model(model_path), Path(tmp) / "sm")
        return _zip_folder(Path(tmp) / "sm")


def tflite_bytes(model_path: Path | str, quantize: bool) -> bytes:
    """The ``.keras`` file at ``model_path`` as TFLite (float32, or int8 weights)."""
    from cnnlab.use.inference import load_run_model

    require_tensorflow()
    with tempfile.TemporaryDirectory() as tmp, _CONVERT_LOCK:
        _export_saved_model(load_run_model(model_path), Path(tmp) / "sm")
        return _convert(Path(tmp) / "sm", quantize)


# ---------------------------------------------------------------- the agreement check


def _interpreter(content: bytes) -> Any:
    """A TFLite interpreter for ``content``: LiteRT's, else TensorFlow's deprecated one."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the [export] extra is not installed; TF 2.21 still ships one
        import tensorflow as tf

        with warnings.catch_warnings():  # its deprecation notice, not the user's concern
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_content=content)
    return Interpreter(model_content=content)


def _model_input(model: keras.Model, x_uint8: np.ndarray) -> np.ndarray:
    """Raw pixels as ``model`` takes them: float32, 0..255 (or 0..1 without Rescaling)."""
    from cnnlab.use.inference import input_scale

    dtype = np.dtype(model.inputs[0].dtype)  # cnnlab models: float32 of 0..255
    if np.issubdtype(dtype, np.integer):
        return x_uint8.astype(dtype)
    return (x_uint8.astype(np.float32) * np.float32(input_scale(model) / 255.0)).astype(dtype)


def keras_labels(model: keras.Model, x_uint8: np.ndarray) -> np.ndarray:
    """The label ``model`` gives each image of ``x_uint8`` (N, H, W, C)."""
    labels = [np.asarray(model(_model_input(model, x_uint8[i:i + BATCH]), training=False))
              .argmax(axis=1) for i in range(0, len(x_uint8), BATCH)]
    return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)


def tflite_labels(content: bytes, x: np.ndarray) -> np.ndarray:
    """The label the TFLite model ``content`` gives each image of ``x`` (model input)."""
    interpreter = _interpreter(content)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    labels = []
    for i in range(0, len(x), BATCH):
        batch = x[i:i + BATCH]
        interpreter.resize_tensor_input(inp["index"], list(batch.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], batch.astype(inp["dtype"]))
        interpreter.invoke()
        labels.append(interpreter.get_tensor(out["index"]).argmax(axis=1))
    return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)


def tflite_agreement(model: keras.Model, content: bytes, x_uint8: np.ndarray
                     ) -> tuple[int, int]:
    """(images labelled alike, images checked) by ``model`` and the TFLite ``content``."""
    expected_shape = tuple(model.inputs[0].shape[1:])
    if x_uint8.ndim != 4 or tuple(x_uint8.shape[1:]) != expected_shape:
        raise ValueError(f"Check images have shape {x_uint8.shape[1:]}; the model takes "
                         f"{expected_shape}. Check it on the run's own data set.")
    got = tflite_labels(content, _model_input(model, x_uint8))
    return int((got == keras_labels(model, x_uint8)).sum()), len(x_uint8)


# ---------------------------------------------------------------- a run's exports on disk


def _stamp(model_path: Path) -> list[int]:
    """What identifies this version of best.keras: its size and modification time."""
    st = model_path.stat()
    return [st.st_size, st.st_mtime_ns]


def load_exports(run_dir: Path | str) -> list[ExportFile] | None:
    """The run's prepared exports, or None when none are prepared for its current model."""
    run_dir = Path(run_dir)
    model_path = runs.best_model_path(run_dir)
    try:
        manifest = json.loads((run_dir / EXPORT_DIR / MANIFEST_FILE).read_text("utf-8"))
        if not model_path.is_file() or manifest.get("model") != _stamp(model_path):
            return None
        files = [ExportFile(str(f["file_name"]), str(f["label"]), str(f["mime"]),
                            int(f["size"]), _agreement(f.get("agreement")))
                 for f in manifest["files"]]
    except (OSError, KeyError, TypeError, ValueError, AttributeError):  # none, or damaged
        return None
    # Only our own names: a manifest edited to name "../../x" never leads a download there.
    if not files or not all(f.file_name in EXPORT_NAMES and export_path(run_dir, f.file_name)
                            .is_file() for f in files):
        return None
    return files


def _agreement(value: Any) -> tuple[int, int] | None:
    """A manifest's [agreeing, checked] as a pair (None: not checked)."""
    if value is None:
        return None
    agree, total = value
    return int(agree), int(total)


def export_path(run_dir: Path | str, file_name: str) -> Path:
    """Where the prepared export ``file_name`` (one of EXPORT_NAMES) lives."""
    return Path(run_dir) / EXPORT_DIR / file_name


def prepare_exports(run_dir: Path | str, x_check: np.ndarray | None,
                    progress: Progress | None = None) -> list[ExportFile]:
    """Export the run's best.keras three ways into ``export/`` and check the TFLite ones.

    ``x_check``: uint8 test images of the run's data set (None: no agreement check).
    Raises ExportUnavailable off TensorFlow, FileNotFoundError without a best.keras.
    """
    from cnnlab.use.inference import load_run_model

    def tell(fraction: float, text: str) -> None:
        if progress:
            progress(fraction, text)

    require_tensorflow()
    run_dir = Path(run_dir)
    model_path = runs.best_model_path(run_dir)
    if not model_path.is_file():
        raise FileNotFoundError(f"{runs.BEST_FILE} is missing in this run's folder, so there "
                                "is no model to export.")
    stamp = _stamp(model_path)  # before loading: a model replaced meanwhile reads as stale
    out = run_dir / EXPORT_DIR
    files: list[ExportFile] = []
    with tempfile.TemporaryDirectory() as tmp, _CONVERT_LOCK:
        model = load_run_model(model_path)
        folder = Path(tmp) / "sm"
        tell(0.1, "Writing the SavedModel…")
        _export_saved_model(model, folder)  # once: both TFLite models convert from it
        data = _zip_folder(folder)
        runs.write_bytes(out / SAVED_MODEL_ZIP, data)
        files.append(ExportFile(SAVED_MODEL_ZIP, "SavedModel (zip)", "application/zip",
                                len(data)))
        for step, (name, label, quantize) in enumerate(
                ((TFLITE_FLOAT, "TFLite float32", False),
                 (TFLITE_INT8, "TFLite int8 (dynamic range)", True))):
            tell(0.4 + 0.3 * step, f"Converting to {label}…")
            data = _convert(folder, quantize)
            agreement = None if x_check is None else tflite_agreement(model, data, x_check)
            runs.write_bytes(out / name, data)
            files.append(ExportFile(name, label, "application/octet-stream", len(data),
                                    agreement))
    # Written last: a manifest only ever names files that are complete on disk.
    runs.write_json(out / MANIFEST_FILE, {"model": stamp, "files": [
        {"file_name": f.file_name, "label": f.label, "mime": f.mime, "size": f.size,
         "agreement": list(f.agreement) if f.agreement else None} for f in files]})
    tell(1.0, "Exports ready.")
    return files
