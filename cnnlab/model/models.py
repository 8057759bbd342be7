"""Model building from a ModelConfig, and a pure-Python trace of its layers.

One plan (``layer_plan``) lists every layer with its Keras class, arguments, output shape and
parameter count. ``build_model`` turns the plan into a Keras functional model, ``layer_table``
shows it without importing TensorFlow (so the Configure page stays instant), and
``to_keras_script`` writes it out as plain Keras code. One plan for all three keeps them equal.
A pretrained backbone (``config.backbone``) is one row of the plan: its numbers come from
``backbones.BACKBONES``, and ``build_model`` builds it with keras.applications.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.data import datasets
from cnnlab.model import backbones
from cnnlab.model.config import ModelConfig, conv_out, pool_out
from cnnlab.model.fit_settings import FitSettings

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
    """One layer of the plan: Keras class name, constructor arguments, output shape, params
    (all of them, as Keras' ``count_params``) and ``trainable`` ones in phase 1 (without
    BatchNorm's moving statistics and a frozen backbone's weights)."""

    name: str
    kind: str
    args: dict[str, Any]
    output_shape: tuple[int, ...]
    params: int
    trainable: int


def layer_plan(
    config: ModelConfig, input_shape: tuple[int, ...], n_classes: int
) -> list[LayerSpec]:
    """Every layer of the model in order, starting with the input. Pure Python.

    Shapes of an invalid config may contain zeros; call ``config.validate`` first.
    """
    h, w, c = (int(v) for v in input_shape)
    plan = [LayerSpec("input", "Input", {"shape": (h, w, c)}, (h, w, c), 0, 0)]

    def add(name: str, kind: str, args: dict[str, Any], shape: tuple[int, ...],
            params: int = 0, trainable: int | None = None) -> None:
        plan.append(LayerSpec(name, kind, args, shape, params,
                              params if trainable is None else trainable))

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
    if aug.erase > 0:
        # factor (p, p): erase with chance p (one number would draw the chance from [0, p]).
        add("augment_erase", "RandomErasing",
            {"factor": (aug.erase, aug.erase), "value_range": (0, 255)}, (h, w, c))
    row = backbones.BACKBONES.get(config.backbone)
    if row is not None:
        # The backbone takes raw 0..255 pixels through its own preprocessing, not Rescaling.
        size = row.input_size
        add("imagenet_preprocess", "ImagenetPreprocess",
            {"size": size, "mode": row.preprocess}, (size, size, 3))
        h, w, c = row.output_shape
        add("backbone", row.keras_class, {}, (h, w, c), row.params, 0)
    else:
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
            if b.batch_norm:  # moving mean and variance are not trained
                add(f"block{i}_bn{j}", "BatchNormalization", bn_args, (h, w, c), 4 * c, 2 * c)
        if b.pool > 0:
            h, w = pool_out(h, b.pool), pool_out(w, b.pool)
            add(f"block{i}_pool", "MaxPooling2D", {"pool_size": b.pool}, (h, w, c))
        if b.dropout > 0:
            add(f"block{i}_dropout", "Dropout", {"rate": b.dropout}, (h, w, c))

    if config.global_pool or row is not None:  # a backbone's head always pools
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
            add(f"dense{k}_bn", "BatchNormalization", bn_args, (n,), 4 * n, 2 * n)
        if d.dropout > 0:
            add(f"dense{k}_dropout", "Dropout", {"rate": d.dropout}, (n,))
    add("output", "Dense", {"units": n_classes, "activation": "softmax"}, (n_classes,),
        n * n_classes + n_classes)
    return plan


def layer_table(
    config: ModelConfig, input_shape: tuple[int, ...], n_classes: int
) -> list[dict[str, Any]]:
    """Rows ``{"name", "type", "output_shape", "params", "trainable"}`` matching the Keras
    model exactly (output shapes without the batch axis; ``trainable``: in phase 1, a
    backbone frozen). Pure Python, no TensorFlow import."""
    return [
        {"name": s.name, "type": s.kind, "output_shape": s.output_shape, "params": s.params,
         "trainable": s.trainable}
        for s in layer_plan(config, input_shape, n_classes)
    ]


def total_params(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Parameter count, equal to Keras ``model.count_params()`` (BatchNorm statistics included)."""
    return sum(s.params for s in layer_plan(config, input_shape, n_classes))


def trainable_params(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Parameters trained in phase 1 (a backbone frozen), equal to the sizes of Keras'
    ``model.trainable_weights``; ``total_params`` minus this is the frozen count."""
    return sum(s.trainable for s in layer_plan(config, input_shape, n_classes))


def forward_flops(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> int | None:
    """Floating-point operations of one image's forward pass through the convolutions and
    dense layers (a multiply-add counts 2; the rest is small beside them); None for a
    backbone model, whose inner layers the plan does not list. Training costs about 3×."""
    if config.backbone:
        return None
    flops = 0
    c = int(input_shape[-1])
    for s in layer_plan(config, input_shape, n_classes):
        if s.kind == "Conv2D":
            k = s.args["kernel_size"]
            flops += 2 * k * k * c * math.prod(s.output_shape)
        elif s.kind == "Dense":
            flops += 2 * (s.params - s.output_shape[0])
        if len(s.output_shape) == 3:
            c = s.output_shape[-1]
    return flops


def memory_bytes(
    config: ModelConfig, input_shape: tuple[int, ...], n_classes: int
) -> dict[str, int]:
    """Float32 memory: ``weights`` (all parameters) and ``activations_per_sample`` (every
    layer's output for one image, forward pass only; a backbone's row counts all its inner
    layers' outputs at its input size)."""
    plan = layer_plan(config, input_shape, n_classes)
    row = backbones.BACKBONES.get(config.backbone)
    return {
        "weights": 4 * sum(s.params for s in plan),
        "activations_per_sample": 4 * sum(
            row.activations if row is not None and s.name == "backbone"
            else math.prod(s.output_shape) for s in plan),
    }


def build_model(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int,
                weights: str | None = None, fused_batch_norm: bool = False) -> keras.Model:
    """Keras functional model (uncompiled): uint8-ready input, optional augmentation
    (active only in training), Rescaling(1/255), conv blocks, dense head, softmax output.

    With ``config.backbone``: ImagenetPreprocess, then the backbone as a nested model named
    "backbone", frozen and called with ``training=False`` (its BatchNorm stays in inference
    mode in both phases), its ``weights`` None (random), "imagenet" or a file's path
    (``backbones.build_backbone``; WeightsError in one sentence when they cannot be had).

    ``fused_batch_norm``: batch norm as batch_norm.FusedBatchNormalization, the same
    arithmetic trained in one TensorFlow op, for the model a run trains (training.py saves
    its best model through a twin built without it).
    """
    import keras

    if weights is not None and not config.backbone:
        raise ValueError(f"Weights {weights!r} are for a backbone, but this config has none; "
                         "choose a backbone or no weights.")
    plan = layer_plan(config, input_shape, n_classes)
    inputs = keras.Input(shape=plan[0].output_shape, name="input")
    x = inputs
    for spec in plan[1:]:
        if spec.name == "imagenet_preprocess":
            x = backbones.ImagenetPreprocess(**spec.args, name=spec.name)(x)
        elif spec.name == "backbone":
            base = backbones.build_backbone(config.backbone, weights)
            base.trainable = False  # phase 1: only the head learns
            x = base(x, training=False)
        else:
            layer = getattr(keras.layers, spec.kind)
            if fused_batch_norm and spec.kind == "BatchNormalization":
                from cnnlab.model.batch_norm import FusedBatchNormalization as layer
            x = layer(**spec.args, name=spec.name)(x)
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


def make_optimizer(config: ModelConfig, lr_factor: float = 1.0) -> keras.optimizers.Optimizer:
    """The Keras optimizer of ``config``, with its exponential-decay schedule when set;
    ``lr_factor`` scales the learning rate (phase 2: ``config.fine_tune_lr_factor``)."""
    import keras

    lr: float | keras.optimizers.schedules.LearningRateSchedule = (
        config.learning_rate * lr_factor)
    if config.lr_decay_rate is not None:
        lr = keras.optimizers.schedules.ExponentialDecay(
            initial_learning_rate=config.learning_rate * lr_factor,
            decay_steps=config.lr_decay_steps,
            decay_rate=config.lr_decay_rate,
        )
    cls = getattr(keras.optimizers, OPTIMIZER_CLASSES[config.optimizer])
    if config.optimizer == "sgd":
        return cls(learning_rate=lr, momentum=SGD_MOMENTUM)
    return cls(learning_rate=lr)


def compile_model(model: keras.Model, config: ModelConfig, lr_factor: float = 1.0,
                  steps_per_execution: int = 1) -> None:
    """Compile with the config's optimizer (a fresh one; its learning rate × ``lr_factor``),
    sparse categorical cross-entropy and accuracy; ``steps_per_execution`` as
    fit_settings.steps_per_execution chooses (it changes speed, not results)."""
    model.compile(optimizer=make_optimizer(config, lr_factor), loss=LOSS,
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)


# --- standalone script --------------------------------------------------------------------


def _py(value: Any) -> str:
    """Python source for an argument value."""
    if isinstance(value, float) and value == RESCALE:
        return "1 / 255"
    return repr(value)


def _optimizer_source(config: ModelConfig, scaled: bool = False) -> list[str]:
    """The script's optimizer lines; ``scaled``: its learning rate × the ``lr_factor``
    argument (phase 2 of a backbone model)."""
    lines = []
    lr = repr(config.learning_rate) + (" * lr_factor" if scaled else "")
    if config.lr_decay_rate is not None:
        lines += [
            "    lr = keras.optimizers.schedules.ExponentialDecay(",
            f"        initial_learning_rate={lr},",
            f"        decay_steps={config.lr_decay_steps!r},",
            f"        decay_rate={config.lr_decay_rate!r},",
            "    )",
        ]
        lr = "lr"
    extra = f", momentum={SGD_MOMENTUM}" if config.optimizer == "sgd" else ""
    cls = OPTIMIZER_CLASSES.get(config.optimizer, "Adam")
    lines.append(f"    optimizer = keras.optimizers.{cls}(learning_rate={lr}{extra})")
    return lines


# The script's copy of cnnlab.model.imagenet_preprocess.ImagenetPreprocess (a script stands alone;
# tests/test_backbones.py checks that both build the same model).
_PREPROCESS_CLASS = '''

@keras.saving.register_keras_serializable(package="cnnlab")
class ImagenetPreprocess(keras.layers.Layer):
    """Raw 0..255 pixels -> the backbone's input: grey to 3 channels, resize to size x size,
    and for mode "caffe" (ResNet50, VGG16) RGB to BGR minus the ImageNet mean."""

    def __init__(self, size, mode="included", **kwargs):
        super().__init__(**kwargs)
        self.size, self.mode = int(size), mode

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        if x.shape[-1] == 1:
            x = keras.ops.repeat(x, 3, axis=-1)
        if tuple(x.shape[1:3]) != (self.size, self.size):
            x = keras.ops.image.resize(x, (self.size, self.size), interpolation="bilinear")
        if self.mode == "caffe":
            mean = keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=self.compute_dtype)
            x = keras.ops.flip(x, axis=-1) - mean
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 3)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "mode": self.mode}


def unfreeze_top(base: keras.Model, n: int) -> None:
    """Phase 2: train the top n layers of the backbone; BatchNormalization stays frozen."""
    base.trainable = True
    top = {id(layer) for layer in base.layers[-n:]}
    for layer in base.layers:
        layer.trainable = (id(layer) in top
                           and not isinstance(layer, keras.layers.BatchNormalization))
'''.splitlines()


def _backbone_source(config: ModelConfig) -> list[str]:
    """The script's lines that build the frozen backbone and call it on ``x``."""
    row = backbones.info(config.backbone)
    extra = "".join(f", {k}={v!r}" for k, v in row.keras_args.items())
    size = row.input_size
    return [
        f"    base = keras.applications.{row.keras_class}(",
        f"        include_top=False, weights=WEIGHTS, input_shape=({size}, {size}, 3){extra}",
        "    )",
        '    base.name = "backbone"',
        "    base.trainable = False  # phase 1: only the head learns",
        "    # training=False: its BatchNorm stays in inference mode, in phase 2 too.",
        "    x = base(x, training=False)",
    ]


def to_keras_script(
    config: ModelConfig, fit: FitSettings, input_shape: tuple[int, ...], n_classes: int,
    dataset_name: str, weights: str | None = "imagenet",
) -> str:
    """A runnable standalone Python script (plain Keras) that builds, compiles and trains the
    same model with ``fit``'s batch size, epochs and patience on ``dataset_name`` loaded
    with keras.datasets. ``CNNLAB_BUILD_ONLY=1`` makes it stop after building; importing it
    and calling ``build_model()`` works too.

    A backbone model trains in two phases as CNN Lab does (frozen, then its top
    ``config.unfreeze`` layers for ``fit.fine_tune_epochs``); ``weights`` ("imagenet" or
    None) is its starting point (a server's weights file becomes None: its path is not
    the reader's)."""
    plan = layer_plan(config, input_shape, n_classes)
    transfer = bool(config.backbone)
    n_aug = sum(s.name.startswith("augment") for s in plan)
    layers = []
    for spec in plan[1:]:
        if spec.name == "backbone":
            layers += _backbone_source(config)
            continue
        args = ", ".join(f"{k}={_py(v)}" for k, v in spec.args.items())
        if spec.name == "output":  # the class count stays a named constant in the script
            args = 'units=N_CLASSES, activation="softmax"'
        sep = ", " if args else ""
        owner = "" if spec.kind == "ImagenetPreprocess" else "keras.layers."  # the script's own
        layers.append(f'    x = {owner}{spec.kind}({args}{sep}name="{spec.name}")(x)')
    module = KERAS_DATASETS.get(dataset_name)
    if module:
        note = "  # the bundled sample is a slice of MNIST" if module != dataset_name else ""
        load = [
            f"    (x_train, y_train), (x_test, y_test) = keras.datasets.{module}.load_data(){note}",
            "    # Pixels stay uint8 0..255: the model rescales inside "
            f"(layer '{plan[1 + n_aug].name}').",
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
    transfer_constants, phase2 = [], []
    if transfer:
        # A server path means nothing on the reader's machine (and is not theirs to see).
        start = weights if weights in (None, "imagenet") else None
        transfer_constants = [
            f"WEIGHTS = {start!r}  # the backbone's start: 'imagenet' or None (random)",
            f"UNFREEZE = {config.unfreeze}  # phase 2 trains the backbone's top layers",
            f"FINE_TUNE_EPOCHS = {fit.fine_tune_epochs}",
            f"FINE_TUNE_LR_FACTOR = {config.fine_tune_lr_factor!r}",
            "CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)",
            *_PREPROCESS_CLASS,
        ]
        phase2 = [
            "    # Phase 2: fine-tune the backbone's top layers at a lower learning rate.",
            "    if UNFREEZE > 0 and FINE_TUNE_EPOCHS > 0:",
            '        unfreeze_top(model.get_layer("backbone"), UNFREEZE)',
            "        compile_model(model, lr_factor=FINE_TUNE_LR_FACTOR)  # a fresh optimizer",
            "        model.fit(",
            "            x_train, y_train, batch_size=BATCH_SIZE,",
            "            epochs=EPOCHS + FINE_TUNE_EPOCHS, initial_epoch=len(history.epoch),",
            "            validation_split=0.1, callbacks=callbacks,",
            "        )",
        ]
    src = [
        '"""A CNN from CNN Lab, in plain Keras: build, compile, train.',
        "",
        "Data set: DATASET below.  Run:  python this_file.py",
        "Build only (print the summary):  CNNLAB_BUILD_ONLY=1 python this_file.py",
        *(["Two phases: the pretrained backbone frozen for EPOCHS, then its top UNFREEZE",
           "layers fine-tuned for FINE_TUNE_EPOCHS at FINE_TUNE_LR_FACTOR × the learning rate."]
          if transfer else []),
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
        *(transfer_constants if transfer else []),
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
        *(["def compile_model(model: keras.Model, lr_factor: float = 1.0) -> None:",
           '    """Optimizer (its learning rate × lr_factor), loss and metric."""']
          if transfer else ["def compile_model(model: keras.Model) -> None:",
                            '    """Optimizer, loss and metric."""']),
        *_optimizer_source(config, scaled=transfer),
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
        f"    {'history = ' if transfer else ''}model.fit(",
        "        x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS,",
        "        validation_split=0.1, callbacks=callbacks,",
        "    )",
        *(phase2 if transfer else []),
        "    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)",
        '    print(f"test accuracy: {accuracy:.4f}  test loss: {loss:.4f}")',
        "",
        "",
        'if __name__ == "__main__":',
        "    main()",
        "",
    ]
    return "\n".join(src)
