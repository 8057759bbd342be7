"""Batch normalization that trains in one fused TensorFlow op.

Keras 3 normalizes a training batch in separate ops (cast to float32, mean, variance,
normalize, cast back), each a pass over the activations, and its gradient in as many
again; TensorFlow's FusedBatchNormV3 does the forward and the backward in one op each.
On 2 Zen 4 cores one BatchNormalization of a 128×28×28×32 bfloat16 batch took 16 ms
a training step (forward and backward) in Keras and 3 ms fused; a whole epoch of
best-mnist (then with max pools) was 1.18× faster (bench/batch_norm.py: median of 7 ABBA
pairs, 90 % interval 1.12-1.74; control 1.06, 0.93-1.12). Same arithmetic: the
statistics are computed in float32 either way; the moving variance is the batch's
unbiased variance (n/(n-1) of Keras', under 0.02 % apart for a batch of 128 images of
7×7 or more).

Only runs train with it (models.build_model(..., fused_batch_norm=True)); the models a run
saves for others to load (best.keras) hold Keras' own BatchNormalization, so they load
anywhere. Importing this module imports Keras and registers the class for
``keras.saving.load_model(..., safe_mode=True)`` of a run's resumable last.keras.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="cnnlab")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training step on TensorFlow is one
    FusedBatchNormV3 op (images, channels last); everything else is Keras' own."""

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not (training and self.trainable and mask is None and self._fusable(inputs)):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, keras.ops.cast(self.gamma, "float32"),
            keras.ops.cast(self.beta, "float32"), epsilon=self.epsilon, is_training=True)
        self.moving_mean.assign(self.moving_mean * self.momentum
                                + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + variance * (1.0 - self.momentum))
        return keras.ops.cast(y, self.compute_dtype)

    def _fusable(self, inputs: Any) -> bool:
        """Whether the fused op computes exactly this layer: TensorFlow, a batch of
        images normalized per channel (last axis), plain scale and offset."""
        rank = len(inputs.shape)
        return (keras.backend.backend() == "tensorflow" and rank == 4
                and self.axis in (-1, rank - 1) and self.center and self.scale
                and not self.renorm and not self.synchronized)
