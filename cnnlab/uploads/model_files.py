"""What an uploaded ``.keras`` file declares, read from its archive before anything is built.

A ``.keras`` file is a zip of ``config.json`` (the architecture), ``metadata.json`` and
``model.weights.h5``. Keras allocates every weight the config declares before it reads a
single one, so a 1 KB file declaring one huge Dense layer can take gigabytes of the web
server's memory. ``inspect_model_file`` reads only the zip's directory and ``config.json``
(both capped), works out the declared parameter count and input shape with
``model_walk`` and refuses what exceeds this server's budget, all in a few MB of memory.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cnnlab.model import model_walk
from cnnlab.train.budgets import MB, Budgets

CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 1_000_000  # a Keras config is a few KB; 1 MB still parses in a blink
MAX_MEMBERS = 100  # a .keras file holds 3 (more with assets); a zip's directory is read whole
MAX_DIRECTORY_BYTES = 64 * 1024  # the zip directory of MAX_MEMBERS entries fits easily
# Archive contents: float32 weights (4 bytes each) within the parameter budget, plus room
# for the config, metadata, assets and the .h5 file's own structure.
BYTES_PER_PARAM = 4
ARCHIVE_SLACK_BYTES = 16 * MB
# The largest input image: every prediction resizes a picture to it and shows the feature
# maps of each conv layer at about that size, so memory and time grow with its area. The
# lab's data sets are 28x28 and 32x32 and ImageNet-style models take 224 to 512 per side;
# 1024x1024 leaves room for those and keeps one input under 12 MB of float32 pixels.
MAX_INPUT_PIXELS = 1024 * 1024
MAX_INPUT_SIDE = 4096  # a long thin strip is still an image up to this side
# What an uploaded model's input may look like: an image, grey or colour.
ALLOWED_INPUT = "(height, width, 1) for grey images or (height, width, 3) for colour images"
SAVE_HINT = ("Allowed is a model saved with model.save('model.keras') in Keras 3; an old .h5 "
             "file or another file renamed to .keras will not load.")


class ModelRejected(ValueError):
    """A model file that cannot be used here; the message says why and what to do."""


@dataclass(frozen=True)
class ModelFacts:
    """What a model file declares. ``params`` is None when some layer's size could not be
    worked out from the config (``unknown_layers``); ``params_at_least`` counts the rest."""

    params: int | None
    params_at_least: int
    input_shape: tuple[int, ...] | None
    unknown_layers: tuple[str, ...]
    archive_bytes: int


def archive_cap(budgets: Budgets) -> int:
    """The most bytes a model archive may unpack to on this server."""
    return BYTES_PER_PARAM * budgets.max_params + ARCHIVE_SLACK_BYTES


def unreadable(name: str, reason: str) -> ModelRejected:
    """The error for a file Keras could not (or would not be able to) read as a model."""
    return ModelRejected(f"{name} could not be read as a Keras model ({reason}). {SAVE_HINT}")


def input_problem(shape: tuple[int | None, ...] | None) -> str | None:
    """Why a model input of ``shape`` (without the batch axis; None for several inputs)
    cannot take pictures here, or None when it can."""
    if shape is None or len(shape) != 3 or shape[-1] not in (1, 3) or any(
        v is None or v < 1 for v in shape
    ):
        given = "several inputs" if shape is None else str(shape)
        return (f"The model takes input of shape {given}; allowed is one image input "
                f"{ALLOWED_INPUT}. Save a model that starts with keras.Input((28, 28, 1)) "
                "(digits) or keras.Input((32, 32, 3)) (CIFAR-10).")
    height, width = int(shape[0] or 0), int(shape[1] or 0)
    if height * width > MAX_INPUT_PIXELS or max(height, width) > MAX_INPUT_SIDE:
        return (f"The model takes input of shape {shape} ({height * width:,} pixels); this "
                f"server allows images of at most {MAX_INPUT_PIXELS:,} pixels "
                f"(1024×1024) and {MAX_INPUT_SIDE:,} pixels per side. Save a model with a "
                "smaller input, e.g. keras.Input((28, 28, 1)) or keras.Input((224, 224, 3)).")
    return None


def over_budget(name: str, params: int, max_params: int, *, counted: str = "declares",
                largest: tuple[str, int] = ("", 0)) -> ModelRejected:
    """The error for a model with more parameters than this server allows; ``counted`` says
    how they were found ("declares", "declares at least" from the config, "has" built)."""
    biggest = f" ({largest[0]} alone has {largest[1]:,})" if largest[1] else ""
    return ModelRejected(
        f"{name} {counted} {params:,} parameters{biggest}; this server allows at most "
        f"{max_params:,}. Use fewer filters or dense units, or more pooling before the "
        "dense layers, and save the model again.")


def _directory_bytes(path: Path) -> int | None:
    """The size the zip's end record gives its central directory (None: no end record).

    Read before ``zipfile`` parses the directory, which it does whole: a crafted zip of a
    few MB could otherwise list millions of entries, each a Python object in the server.
    """
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        tail = min(size, 22 + 65535)  # the end record (22 bytes) and at most a 64 KB comment
        fh.seek(size - tail)
        data = fh.read(tail)
    at = data.rfind(b"PK\x05\x06")
    if at < 0 or len(data) - at < 22:
        return None
    entries, directory = struct.unpack("<HI", data[at + 10:at + 16])
    return MAX_DIRECTORY_BYTES + 1 if entries == 0xFFFF else directory  # 0xFFFF: zip64


def read_config(path: Path | str, budgets: Budgets) -> tuple[dict, int]:
    """The parsed config.json of a ``.keras`` archive and the archive's unpacked size.

    Raises ModelRejected for a file that is not a zip, lists too many or too large
    members, has no config.json, or whose config.json is too large or not JSON.
    """
    path = Path(path)
    name = path.name
    try:
        directory = _directory_bytes(path)
    except OSError as exc:
        raise unreadable(name, f"the file cannot be opened: {exc.strerror}") from exc
    if directory is None:
        raise unreadable(name, "it is not a zip archive")
    if directory > MAX_DIRECTORY_BYTES:
        raise ModelRejected(
            f"{name}'s zip directory is {directory:,} bytes long; a model archive's is at most "
            f"{MAX_DIRECTORY_BYTES:,} (a few entries). {SAVE_HINT}")
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            total = sum(m.file_size for m in members)
            if len(members) > MAX_MEMBERS:
                raise ModelRejected(
                    f"{name} holds {len(members):,} files; a model archive holds at most "
                    f"{MAX_MEMBERS} (config.json, metadata.json, model.weights.h5). {SAVE_HINT}")
            if total > archive_cap(budgets):
                raise ModelRejected(
                    f"{name} unpacks to {total:,} bytes; this server allows at most "
                    f"{archive_cap(budgets):,} bytes for a model ({budgets.max_params:,} "
                    "float32 parameters and their files). Upload a smaller model, with "
                    "fewer filters or dense units, saved with float32 weights.")
            info = next((m for m in members if m.filename == CONFIG_FILE), None)
            if info is None:
                listed = ", ".join(m.filename for m in members[:5]) or "nothing"
                raise unreadable(name, f"the archive has no {CONFIG_FILE}; it holds {listed}")
            if info.file_size > MAX_CONFIG_BYTES:
                raise ModelRejected(
                    f"{name}'s {CONFIG_FILE} is {info.file_size:,} bytes; this server allows "
                    f"at most {MAX_CONFIG_BYTES:,}. A Keras model's config is a few KB: save "
                    "the model again with model.save('model.keras').")
            with zf.open(info) as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)  # the size above is the archive's claim
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
            EOFError, OSError) as exc:
        raise unreadable(name, f"a damaged or unsupported zip archive: {exc}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise unreadable(name, f"its {CONFIG_FILE} is larger than its zip entry says")
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        reason = str(exc).split(":")[0] if isinstance(exc, ValueError) else "nested too deep"
        raise unreadable(name, f"its {CONFIG_FILE} is not valid JSON: {reason}") from exc
    if not isinstance(config, dict):
        raise unreadable(name, f"its {CONFIG_FILE} holds a {type(config).__name__}, not a "
                         "model config")
    return config, total


def inspect_model_file(path: Path | str, budgets: Budgets) -> ModelFacts:
    """Read a ``.keras`` file's declared size and input without building the model.

    Raises ModelRejected when the archive or its config is unreadable or too large, the
    input is not one picture of at most MAX_INPUT_PIXELS, or the declared parameters (or,
    for layer kinds not known here, those that can be counted) exceed ``budgets.max_params``.
    """
    name = Path(path).name
    config, total = read_config(path, budgets)
    size = model_walk.declared_size(config)
    shape = None
    if size.inputs is not None:
        shape = size.inputs[0][1:] if len(size.inputs) == 1 else None
        problem = input_problem(shape)
        if problem:
            raise ModelRejected(problem)
    if size.params > budgets.max_params:
        counted = "declares" if size.complete else "declares at least"
        raise over_budget(name, size.params, budgets.max_params, counted=counted,
                          largest=size.largest)
    return ModelFacts(
        params=size.params if size.complete else None, params_at_least=size.params,
        input_shape=tuple(int(v or 0) for v in shape) if shape is not None else None,
        unknown_layers=tuple(size.unknown), archive_bytes=total)
