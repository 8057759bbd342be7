"""Model building from a ModelConfig, and a pure-Python trace of its layers.

One plan (``layer_plan``) lists every layer with its Keras class, arguments, output shape and
parameter count. ``build_model`` turns the plan into a Keras functional model, ``layer_table``
shows it without importing TensorFlow (so the Configure page stays instant), and
``to_keras_script`` writes it out as plain Keras code. One plan for all three keeps them equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab import datasets
from cnnlab.config import ModelConfig, conv_out, pool_out
from cnnlab.fit_settings import FitSettings

if TYPE_CHECKING:
    import keras

RESCALE = 1 / 255  # models take raw uint8 pixels; scaling happens inside (first layer)
BN_MOMENTUM = 0.99  # Keras' BatchNormalization default
LOSS = "sparse_categorical_crossentropy"
OPTIMIZER_CLASSES = {"adam": "Adam", "nadam": "Nadam", "sgd": "SGD", "rmsprop": "RMSprop"}
SGD_MOMENTUM = 0.9
# Keras data set module per CNN Lab data set name (a fact on each DatasetInfo).
KERAS_DATASETS = {name: info.keras_module for name, info in datasets.REGISTRY.items()
                  if info.keras_module}


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the plan: Keras class name, constructor arguments, output shape, params."""

    name: str
    kind: str
    args: dict[str, Any]
    output_shape: tuple[int, ...]
    params: int


def layer_plan(
    config: ModelConfig, input_shape: tuple[int, ...], n_classes: int
) -> list[LayerSpec]:
    """Every layer of the model in order, starting with the input. Pure Python.

    Shapes of an invalid config may contain zeros; call ``config.validate`` first.
    """
    h, w, c = (int(v) for v in input_shape)
    plan = [LayerSpec("input", "Input", {"shape": (h, w, c)}, (h, w, c), 0)]

    def add(name: str, kind: str, args: dict[str, Any], shape: tuple[int, ...],
            params: int = 0) -> None:
        plan.append(LayerSpec(name, kind, args, shape, params))

    aug = config.augmentation
    if aug.flip:
        add("augment_flip", "RandomFlip", {"mode": "horizontal"}, (h, w, c))
    if aug.translate > 0:
        # "nearest" repeats the border: black for MNIST-like digits (their borders are
        # empty), the photo's own background for pictures, never a black frame around it.
        args = {"height_factor": aug.translate, "width_factor": aug.translate,
                "fill_mode": "nearest"}
        add("augment_translate", "RandomTranslation", args, (h, w, c))
    if aug.rotate > 0:
        add("augment_rotate", "RandomRotation", {"factor": aug.rotate, "fill_mode": "nearest"},
            (h, w, c))
    add("rescale", "Rescaling", {"scale": RESCALE}, (h, w, c))
    # Keras' default momentum needs thousands of steps before the inference statistics are
    # right; a config for small data sets asks for a faster one.
    bn_args = ({} if config.batch_norm_momentum == BN_MOMENTUM
               else {"momentum": config.batch_norm_momentum})

    for i, b in enumerate(config.blocks, start=1):
        for j in range(1, b.convs + 1):
            stride = b.stride if j == 1 else 1
            h = conv_out(h, b.kernel_size, stride, b.padding)
            w = conv_out(w, b.kernel_size, stride, b.padding)
            params = b.kernel_size * b.kernel_size * c * b.filters + b.filters
            c = b.filters
            args = {"filters": b.filters, "kernel_size": b.kernel_size, "strides": stride,
                    "padding": b.padding, "activation": b.activation,
                    "kernel_initializer": config.initializer}
            add(f"block{i}_conv{j}", "Conv2D", args, (h, w, c), params)
            if b.batch_norm:
                add(f"block{i}_bn{j}", "BatchNormalization", bn_args, (h, w, c), 4 * c)
        if b.pool > 0:
            h, w = pool_out(h, b.pool), pool_out(w, b.pool)
            add(f"block{i}_pool", "MaxPooling2D", {"pool_size": b.pool}, (h, w, c))
        if b.dropout > 0:
            add(f"block{i}_dropout", "Dropout", {"rate": b.dropout}, (h, w, c))

    if config.global_pool:
        add("global_pool", "GlobalAveragePooling2D", {}, (c,))
        n = c
    else:
        n = h * w * c
        add("flatten", "Flatten", {}, (n,))
    if config.flatten_dropout > 0:
        add("flatten_dropout", "Dropout", {"rate": config.flatten_dropout}, (n,))
    for k, d in enumerate(config.dense, start=1):
        args = {"units": d.units, "activation": d.activation,
                "kernel_initializer": config.initializer}
        add(f"dense{k}", "Dense", args, (d.units,), n * d.units + d.units)
        n = d.units
        if d.batch_norm:
            add(f"dense{k}_bn", "BatchNormalization", bn_args, (n,), 4 * n)
        if d.dropout > 0:
            add(f"dense{k}_dropout", "Dropout", {"rate": d.dropout}, (n,))
    add("output", "Dense", {"units": n_classes, "activation": "softmax"}, (n_classes,),
        n * n_classes + n_classes)
    return plan


def layer_table(
    config: ModelConfig, input_shape: tuple[int, ...], n_classes: int
) -> list[dict[str, Any]]:
    """Rows ``{"name", "type", "output_shape", "params"}`` matching the Keras model exactly
    (output shapes without the batch axis). Pure Python, no TensorFlow import."""
    return [
        {"name": s.name, "type": s.kind, "output_shape": s.output_shape, "params": s.params}
        for s in layer_plan(config, input_shape, n_classes)
    ]


def total_params(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Parameter count, equal to Keras ``model.count_params()`` (BatchNorm statistics included)."""
    return sum(s.params for s in layer_plan(config, input_shape, n_classes))


def memory_bytes(
    config: ModelConfig, input_shape: tuple[int, ...], n_classes: int
) -> dict[str, int]:
    """Float32 memory: ``weights`` (all parameters) and ``activations_per_sample`` (every
    layer's output for one image, forward pass only)."""
    plan = layer_plan(config, input_shape, n_classes)
    return {
        "weights": 4 * sum(s.params for s in plan),
        "activations_per_sample": 4 * sum(math.prod(s.output_shape) for s in plan),
    }


def build_model(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int
                ) -> keras.Model:
    """Keras functional model (uncompiled): uint8-ready input, optional augmentation
    (active only in training), Rescaling(1/255), conv blocks, dense head, softmax output."""
    import keras

    plan = layer_plan(config, input_shape, n_classes)
    inputs = keras.Input(shape=plan[0].output_shape, name="input")
    x = inputs
    for spec in plan[1:]:
        x = getattr(keras.layers, spec.kind)(**spec.args, name=spec.name)(x)
    return keras.Model(inputs, x, name="cnnlab")


def augmented_images(config: ModelConfig, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """``images`` (uint8, n×h×w×c) as the model's augmentation layers change them in
    training: the same layers, built from the same plan as the model."""
    import keras

    specs = [s for s in layer_plan(config, images.shape[1:], 2) if s.name.startswith("augment")]
    x = keras.ops.convert_to_tensor(images.astype("float32"))
    for i, spec in enumerate(specs):
        x = getattr(keras.layers, spec.kind)(**spec.args, seed=seed + i)(x, training=True)
    return np.clip(np.rint(keras.ops.convert_to_numpy(x)), 0, 255).astype(np.uint8)


def make_optimizer(config: ModelConfig) -> keras.optimizers.Optimizer:
    """The Keras optimizer of ``config``, with its exponential-decay schedule when set."""
    import keras

    lr: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.lr_decay_rate is not None:
        lr = keras.optimizers.schedules.ExponentialDecay(
            initial_learning_rate=config.learning_rate,
            decay_steps=config.lr_decay_steps,
            decay_rate=config.lr_decay_rate,
        )
    cls = getattr(keras.optimizers, OPTIMIZER_CLASSES[config.optimizer])
    if config.optimizer == "sgd":
        return cls(learning_rate=lr, momentum=SGD_MOMENTUM)
    return cls(learning_rate=lr)


def compile_model(model: keras.Model, config: ModelConfig) -> None:
    """Compile with the config's optimizer, sparse categorical cross-entropy and accuracy."""
    model.compile(optimizer=make_optimizer(config), loss=LOSS, metrics=["accuracy"])


# --- standalone script --------------------------------------------------------------------


def _py(value: Any) -> str:
    """Python source for an argument value."""
    if isinstance(value, float) and value == RESCALE:
        return "1 / 255"
    return repr(value)


def _optimizer_source(config: ModelConfig) -> list[str]:
    lines = []
    lr = repr(config.learning_rate)
    if config.lr_decay_rate is not None:
        lines += [
            "    lr = keras.optimizers.schedules.ExponentialDecay(",
            f"        initial_learning_rate={config.learning_rate!r},",
            f"        decay_steps={config.lr_decay_steps!r},",
            f"        decay_rate={config.lr_decay_rate!r},",
            "    )",
        ]
        lr = "lr"
    extra = f", momentum={SGD_MOMENTUM}" if config.optimizer == "sgd" else ""
    cls = OPTIMIZER_CLASSES.get(config.optimizer, "Adam")
    lines.append(f"    optimizer = keras.optimizers.{cls}(learning_rate={lr}{extra})")
    return lines


def to_keras_script(
    config: ModelConfig, fit: FitSettings, input_shape: tuple[int, ...], n_classes: int,
    dataset_name: str,
) -> str:
    """A runnable standalone Python script (plain Keras) that builds, compiles and trains the
    same model with ``fit``'s batch size, epochs and patience on ``dataset_name`` loaded
    with keras.datasets. ``CNNLAB_BUILD_ONLY=1`` makes it stop after building; importing it
    and calling ``build_model()`` works too."""
    plan = layer_plan(config, input_shape, n_classes)
    layers = []
    for spec in plan[1:]:
        args = ", ".join(f"{k}={_py(v)}" for k, v in spec.args.items())
        if spec.name == "output":  # the class count stays a named constant in the script
            args = 'units=N_CLASSES, activation="softmax"'
        sep = ", " if args else ""
        layers.append(f'    x = keras.layers.{spec.kind}({args}{sep}name="{spec.name}")(x)')
    module = KERAS_DATASETS.get(dataset_name)
    if module:
        note = "  # the bundled sample is a slice of MNIST" if module != dataset_name else ""
        load = [
            f"    (x_train, y_train), (x_test, y_test) = keras.datasets.{module}.load_data(){note}",
            "    # Pixels stay uint8 0..255: the model rescales inside (layer 'rescale').",
            "    x_train = x_train.reshape((-1, *INPUT_SHAPE))",
            "    x_test = x_test.reshape((-1, *INPUT_SHAPE))",
            "    return (x_train, y_train.reshape(-1)), (x_test, y_test.reshape(-1))",
        ]
    else:
        load = [
            "    # DATASET is not a keras.datasets data set: load your own uint8 images",
            "    # of shape (n, *INPUT_SHAPE) and integer labels here.",
            '    raise SystemExit(f"load_data(): put code that loads {DATASET} here")',
        ]
    callbacks = ['        keras.callbacks.ModelCheckpoint("best.keras", save_best_only=True),']
    if fit.patience > 0:
        callbacks.append(
            "        keras.callbacks.EarlyStopping(patience=PATIENCE, restore_best_weights=True),"
        )
    src = [
        '"""A CNN from CNN Lab, in plain Keras: build, compile, train.',
        "",
        "Data set: DATASET below.  Run:  python this_file.py",
        "Build only (print the summary):  CNNLAB_BUILD_ONLY=1 python this_file.py",
        '"""',
        "",
        "import os",
        "",
        "import keras",
        "",
        # repr(): the name may be a user's file name; it must stay data, never code.
        f"DATASET = {str(dataset_name)!r}",
        f"INPUT_SHAPE = {tuple(int(v) for v in input_shape)!r}",
        f"N_CLASSES = {n_classes}",
        f"BATCH_SIZE = {fit.batch_size}",
        f"EPOCHS = {fit.epochs}",
        f"PATIENCE = {fit.patience}",
        "",
        "",
        "def build_model() -> keras.Model:",
        '    """The network, layer by layer."""',
        '    inputs = keras.Input(shape=INPUT_SHAPE, name="input")',
        "    x = inputs",
        *layers,
        '    return keras.Model(inputs, x, name="cnnlab")',
        "",
        "",
        "def compile_model(model: keras.Model) -> None:",
        '    """Optimizer, loss and metric."""',
        *_optimizer_source(config),
        "    model.compile(",
        f'        optimizer=optimizer, loss="{LOSS}", metrics=["accuracy"]',
        "    )",
        "",
        "",
        "def load_data():",
        '    """(x_train, y_train), (x_test, y_test) as uint8 images and integer labels."""',
        *load,
        "",
        "",
        "def main() -> None:",
        "    model = build_model()",
        "    model.summary()",
        '    if os.environ.get("CNNLAB_BUILD_ONLY"):',
        "        return",
        "    compile_model(model)",
        "    (x_train, y_train), (x_test, y_test) = load_data()",
        "    callbacks = [",
        *callbacks,
        "    ]",
        "    model.fit(",
        "        x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS,",
        "        validation_split=0.1, callbacks=callbacks,",
        "    )",
        "    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)",
        '    print(f"test accuracy: {accuracy:.4f}  test loss: {loss:.4f}")',
        "",
        "",
        'if __name__ == "__main__":',
        "    main()",
        "",
    ]
    return "\n".join(src)
