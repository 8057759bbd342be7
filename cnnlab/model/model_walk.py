"""Parameter count and input shapes a saved Keras model declares, from its config alone.

Walks the parsed ``config.json`` of a ``.keras`` file layer by layer (Sequential and
Functional, nested models too) with ``layer_sizes``' rules, without building anything, so
a file that declares a billion weights is seen before a single one is allocated. A layer
the rules do not size is reported as unknown and never guessed at: the caller lets Keras
itself (in a child process with a memory ceiling) decide.

Keras builds a layer from its saved ``build_config`` shape when there is one, else from the
shape that reaches it, so a layer is counted at the larger of the two: a file cannot hide
weights by declaring a build shape that disagrees with the model's graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnnlab.model.layer_sizes import Shape, Unknown, as_dict, as_int, layer_size, shape_of

MAX_NESTING = 8  # models inside models deeper than this are left to Keras
MAX_PASSES = 50  # Functional graphs listed out of order get this many passes to resolve
MODEL_KINDS = ("Sequential", "Functional", "Model")
UNKNOWN = (Unknown, RecursionError, ArithmeticError, LookupError, TypeError, ValueError)
Ends = tuple[list[Shape] | None, list[Shape] | None]  # a model's (inputs, outputs)


@dataclass
class DeclaredSize:
    """What a model config declares: ``params`` is exact when ``unknown`` is empty, else a
    lower bound; ``inputs`` are the model's input shapes (None when they cannot be read)."""

    params: int = 0
    inputs: list[Shape] | None = None
    unknown: list[str] = field(default_factory=list)
    largest: tuple[str, int] = ("", 0)  # the layer with the most parameters, for messages

    @property
    def complete(self) -> bool:
        """Whether every layer's size was computed (``params`` is then exact)."""
        return not self.unknown


def declared_size(config: Any) -> DeclaredSize:
    """Parameters and input shapes declared by a parsed ``config.json`` (never raises)."""
    walk = _Walk()
    try:
        if isinstance(config, dict) and config.get("class_name") in MODEL_KINDS:
            walk.inputs = walk.model(config, None, 0)[0]
        else:  # a bare layer, or something else: Keras will refuse it, but count what it builds
            walk.layer(as_dict(config), None, 0)
    except UNKNOWN:
        walk.tried.setdefault(0, "the model's structure")  # counted so far stays a lower bound
    return walk.result()


def _build_shapes(entry: dict[str, Any]) -> list[Shape] | None:
    """The shape(s) a layer's saved ``build_config`` builds it with, if any."""
    build = entry.get("build_config")
    if not isinstance(build, dict) or build.get("input_shape") is None:
        return None
    value = build["input_shape"]
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return [shape_of(v) for v in value]
    return [shape_of(value)]


def _tensor_refs(node: Any) -> list[tuple[str, int, int]]:
    """The (layer, node, tensor) references a Functional node's arguments point at."""
    if isinstance(node, list):  # the legacy format: [[layer, node, tensor, kwargs], ...]
        return [(str(v[0]), as_int(v[1]), as_int(v[2])) for v in node]
    refs, stack = [], [as_dict(node).get("args", [])]
    while stack:  # iterative: a crafted deep nesting must not hit the recursion limit
        item = stack.pop()
        if isinstance(item, dict) and item.get("class_name") == "__keras_tensor__":
            history = as_dict(item.get("config")).get("keras_history")
            if not isinstance(history, list) or len(history) != 3:
                raise Unknown
            refs.append((str(history[0]), as_int(history[1]), as_int(history[2])))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return refs


class _Walk:
    """Counts each layer once, at the largest of the shapes Keras could build it with."""

    def __init__(self) -> None:
        self.counted: dict[int, tuple[str, int]] = {}  # id(layer entry) -> (label, params)
        self.tried: dict[int, str] = {}  # every layer entry that would build weights
        self.inputs: list[Shape] | None = None

    def result(self) -> DeclaredSize:
        size = DeclaredSize(inputs=self.inputs)
        size.params = sum(n for _, n in self.counted.values())
        size.unknown = [label for key, label in self.tried.items() if key not in self.counted]
        if self.counted:
            size.largest = max(self.counted.values(), key=lambda item: item[1])
        return size

    def _count(self, entry: dict[str, Any], kind: Any, cfg: dict[str, Any], label: str,
               shapes: list[Shape] | None) -> None:
        """Count a layer at its build shape and at ``shapes``, whichever is larger; any
        shape it might be built with that cannot be worked out leaves it unknown."""
        try:
            candidates = (_build_shapes(entry), shapes)
            found = [layer_size(kind, cfg, s)[0] for s in candidates if s is not None]
        except UNKNOWN:
            return
        if found:
            self.counted[id(entry)] = (label, max(found))

    def layer(self, entry: dict[str, Any], shapes: list[Shape] | None, depth: int,
              first_call: bool = True) -> Shape | None:
        """Count ``entry`` (a layer's saved dict) called on ``shapes`` (None: unknown) and
        return its output shape (None when it cannot be computed here)."""
        kind = entry.get("class_name")
        if kind in MODEL_KINDS:
            outputs = self.model(entry, shapes, depth + 1)[1] if first_call else None
            return outputs[0] if outputs and len(outputs) == 1 else None
        cfg = as_dict(entry.get("config", {}))
        if first_call:
            label = f"{kind} '{cfg.get('name', '?')}'"
            self.tried[id(entry)] = label
            self._count(entry, kind, cfg, label, shapes)
        if shapes is None:
            return None
        try:
            return layer_size(kind, cfg, shapes)[1]
        except UNKNOWN:
            return None

    def model(self, entry: dict[str, Any], shapes: list[Shape] | None,
              depth: int) -> Ends:
        """Walk a (nested) model called on ``shapes``: (its inputs, its outputs)."""
        if depth > MAX_NESTING:
            self.tried[id(entry)] = f"{entry.get('class_name')} nested too deep"
            return None, None
        cfg = as_dict(entry.get("config"))
        layers = cfg.get("layers")
        if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
            self.tried[id(entry)] = f"{entry.get('class_name')} without a layer list"
            return None, None
        if entry.get("class_name") == "Sequential":
            return self._sequential(cfg, layers, shapes, depth)
        return self._functional(cfg, layers, shapes, depth)

    def _sequential(self, cfg: dict[str, Any], layers: list[dict[str, Any]],
                    shapes: list[Shape] | None, depth: int) -> Ends:
        declared: Shape | None = None
        if layers and layers[0].get("class_name") == "InputLayer":
            declared, layers = _input_shape(layers[0]), layers[1:]
        elif cfg.get("build_input_shape") is not None:
            declared = _try(shape_of, cfg["build_input_shape"])
        # An InputLayer fixes the shapes the layers are built with; else the caller's do.
        shape = declared if declared is not None else (shapes[0] if shapes else None)
        inputs = [shape] if shape is not None else None
        for layer in layers:
            shape = self.layer(layer, [shape] if shape is not None else None, depth)
        if shapes and declared is not None and shapes[0] != declared:
            return inputs, None  # called on another shape: its output is Keras's to work out
        return inputs, [shape] if shape is not None else None

    def _functional(self, cfg: dict[str, Any], layers: list[dict[str, Any]],
                    shapes: list[Shape] | None, depth: int) -> Ends:
        tensors: dict[tuple[str, int, int], Shape | None] = {}
        pending: dict[int, list[Any]] = {}
        for layer in layers:
            name = str(layer.get("name", as_dict(layer.get("config", {})).get("name")))
            if layer.get("class_name") == "InputLayer":
                tensors[(name, 0, 0)] = _input_shape(layer)
                continue
            nodes = layer.get("inbound_nodes") or []
            pending[id(layer)] = list(nodes) if isinstance(nodes, list) else []
            if not pending[id(layer)]:  # never called: still built from its build_config
                self.layer(layer, None, depth)
        calls: dict[int, int] = {}
        for _ in range(MAX_PASSES):  # Keras resolves out-of-order graphs the same way
            progress = False
            for layer in layers:
                queue = pending.get(id(layer), [])
                while queue:
                    refs = _tensor_refs(queue[0])
                    if not all(ref in tensors for ref in refs):
                        break
                    ins = _all_known([tensors[ref] for ref in refs])
                    n = calls.get(id(layer), 0)
                    out = self.layer(layer, ins, depth, first_call=n == 0)
                    offset = 1 if layer.get("class_name") in ("Functional", "Model") else 0
                    name = str(layer.get("name", as_dict(layer.get("config")).get("name")))
                    tensors[(name, n + offset, 0)] = out
                    calls[id(layer)], progress = n + 1, True
                    queue.pop(0)
            if not progress:
                break
        for layer in layers:  # what could not be resolved is unknown, never skipped
            if pending.get(id(layer)) and id(layer) not in calls:
                self.layer(layer, None, depth)
        inputs = [tensors.get(_ref(r)) for r in _ref_list(cfg.get("input_layers"))]
        outputs = [tensors.get(_ref(r)) for r in _ref_list(cfg.get("output_layers"))]
        declared = _all_known(inputs)
        if shapes is not None and declared is not None and shapes != declared:
            return declared, None
        return declared, _all_known(outputs)


def _all_known(shapes: list[Shape | None]) -> list[Shape] | None:
    """``shapes`` when there are some and every one is known, else None."""
    known = [s for s in shapes if s is not None]
    return known if known and len(known) == len(shapes) else None


def _try(fn: Callable[[Any], Shape], value: Any) -> Shape | None:
    try:
        return fn(value)
    except Unknown:
        return None


def _input_shape(entry: dict[str, Any]) -> Shape | None:
    cfg = entry.get("config")
    if not isinstance(cfg, dict):
        return None
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            return _try(shape_of, cfg[key])
    if cfg.get("shape") is not None:
        return _try(lambda v: (None, *shape_of(v)), cfg["shape"])
    return None


def _ref_list(value: Any) -> list[Any]:
    """``input_layers``/``output_layers``: one [name, node, tensor] or a list of them."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return [value]
    return value if isinstance(value, list) else []


def _ref(value: Any) -> tuple[str, int, int]:
    if not isinstance(value, list) or len(value) != 3:
        return ("", -1, -1)
    return (str(value[0]), value[1], value[2]) if all(
        isinstance(v, int) for v in value[1:]) else ("", -1, -1)
