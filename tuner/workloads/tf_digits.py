"""TensorFlow / Keras versions of the built-in digits workloads.

The same networks, data split, target, budget and evaluation interval as
:mod:`perftune.workloads.torch_digits`, so best configs compare across frameworks. Models are
uncompiled ``keras.Model`` objects returning logits; the CNN takes channels-last images
``(N, 32, 32, 1)`` (TensorFlow's native layout on the CPU).
"""

from __future__ import annotations

from perftune.workload import Workload
from perftune.workloads.digits_data import (
    CNN_CHANNELS,
    CNN_SIZE,
    MLP_HIDDEN,
    MLP_SIZE,
    cnn_data,
    digits_workload,
)


def _mlp_model():
    import keras
    from keras import layers

    d, h = MLP_SIZE * MLP_SIZE, MLP_HIDDEN
    return keras.Sequential([keras.Input((d,)), layers.Dense(h, activation="relu"),
                             layers.Dense(h, activation="relu"), layers.Dense(10)],
                            name="mlp_digits")  # fmt: skip


def _cnn_model():
    import keras
    from keras import layers

    c = CNN_CHANNELS
    return keras.Sequential([
        keras.Input((CNN_SIZE, CNN_SIZE, 1)),
        layers.Conv2D(c, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(2 * c, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10),
    ], name="cnn_digits")  # fmt: skip


def mlp_digits() -> Workload:
    return digits_workload("mlp-digits", "tensorflow", _mlp_model)


def cnn_digits() -> Workload:
    return digits_workload("cnn-digits", "tensorflow", _cnn_model,
                           data=lambda: cnn_data(channels_last=True))
