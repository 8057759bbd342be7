"""The input layer of a backbone model: raw pixels → what the pretrained backbone expects.

A registered Keras layer (never a Lambda), so a model holding it saves and loads with
``safe_mode=True``. Importing this module imports Keras; ``cnnlab.model.backbones.register()``
imports it where models are built or loaded.
"""

from __future__ import annotations

from typing import Any

import keras

# keras.applications.imagenet_utils' "caffe" mode: the ImageNet mean of each BGR channel.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
MODES = ("caffe", "included")


@keras.saving.register_keras_serializable(package="cnnlab")
class ImagenetPreprocess(keras.layers.Layer):
    """Raw 0..255 float pixels (h, w, c), c in {1, 3} → (size, size, 3) backbone input.

    Grey images are repeated to three channels, every image is resized (bilinear) to the
    backbone's input size, and "caffe" backbones (ResNet50, VGG16) get
    ``keras.applications.<x>.preprocess_input``'s RGB→BGR and mean subtraction; "included"
    backbones (MobileNetV3, EfficientNet) rescale 0..255 inside themselves.

    Args:
        size: the backbone's input height and width.
        mode: "caffe" or "included".

    Example:

        x = ImagenetPreprocess(size=224, mode="caffe")(inputs)  # then the backbone
    """

    def __init__(self, size: int, mode: str = "included", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"ImagenetPreprocess received mode={mode!r}; use 'caffe' or "
                             "'included'.")
        self.size = int(size)
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        """Preprocess a batch (n, h, w, c)."""
        x = keras.ops.cast(inputs, self.compute_dtype)
        if x.shape[-1] == 1:
            x = keras.ops.repeat(x, 3, axis=-1)
        if tuple(x.shape[1:3]) != (self.size, self.size):
            x = keras.ops.image.resize(x, (self.size, self.size), interpolation="bilinear")
        if self.mode == "caffe":
            mean = keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=self.compute_dtype)
            x = keras.ops.flip(x, axis=-1) - mean
        return x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """(batch, size, size, 3)."""
        return (input_shape[0], self.size, self.size, 3)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, for saving."""
        return {**super().get_config(), "size": self.size, "mode": self.mode}
