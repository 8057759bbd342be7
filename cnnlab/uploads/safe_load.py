"""Building a ``.keras`` file in this process: Keras safe mode, then the shapes a classifier needs.

The last step of loading an untrusted file (``model_check.load_model_file`` runs the static and
child-process checks first) and the whole of loading the lab's own checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.uploads import model_files
from cnnlab.uploads.model_files import ModelRejected

if TYPE_CHECKING:
    import keras


def model_problems(model: keras.Model) -> list[str]:
    """Why ``model`` cannot classify images here (empty list = usable)."""
    problems = []
    try:
        in_shape = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else None
        out_shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else None
    except (AttributeError, ValueError):  # a subclassed model that was never built
        in_shape = out_shape = None
    problem = model_files.input_problem(None if in_shape is None else in_shape[1:])
    if problem:
        problems.append(problem)
    if out_shape is None or len(out_shape) != 2 or (out_shape[-1] or 0) < 2:
        given = "several outputs" if out_shape is None else str(out_shape[1:])
        problems.append(
            f"The model outputs shape {given}; allowed is one vector of class "
            "probabilities (n_classes,) with at least 2 classes. End the model with "
            "Dense(n_classes, activation='softmax')."
        )
    return problems


def read_model(path: Path | str) -> keras.Model:
    """Build a ``.keras`` file in this process (no custom code) and check its shapes.

    No size check: call it for files already checked (``load_model_file``) or written by
    the lab itself. Raises ModelRejected like ``load_model_file``.
    """
    import keras

    name = Path(path).name
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types; each becomes a readable message
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text or "unsafe" in text.lower():
            raise ModelRejected(
                f"{name} needs to run Python code stored in the file (a Lambda layer or "
                "custom function) to load; that is not allowed here because the code could do "
                "anything. Rebuild the model with built-in Keras layers only and save it again."
            ) from exc
        raise model_files.unreadable(name, type(exc).__name__) from exc
    if not isinstance(model, keras.Model):
        raise ModelRejected(f"{name} holds a {type(model).__name__}, not a Keras model.")
    problems = model_problems(model)
    if problems:
        raise ModelRejected(" ".join(problems))
    return model
