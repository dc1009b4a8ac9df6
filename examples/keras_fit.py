"""A Keras ``model.fit`` script, tuned without rewriting its loop: ``fit`` stays Keras', perftune
hooks in through a callback.

Tune it (the framework is read from the decorator, so no ``--framework``)::

    perftune sweep --workload examples/keras_fit.py:train --trials 12

and run it afterwards with the stored best config (or the defaults)::

    python examples/keras_fit.py

``trial.scope()`` is the ``tf.distribute`` strategy's scope the config asks for (one device,
or mirrored replicas); ``trial.optimizer()`` the optimizer it names; the mixed-precision policy
and the thread pools are set before the function runs. ``trial.keras_callback`` counts every
training batch as a step, evaluates on the validation data when an evaluation is due (outside
the training clock) and stops ``fit`` once the trial has ended.
"""

from __future__ import annotations

import numpy as np

import perftune


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1]; a stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split((x / 16.0).astype(np.float32), y, test_size=0.2,
                                              random_state=0, stratify=y)  # fmt: skip
    return x_tr, y_tr, x_va, y_va


@perftune.trainable(name="keras-digits", target=0.95, framework="tensorflow", budget_s=60,
                 eval_interval_s=0.5)  # fmt: skip
def train(trial: perftune.Trial) -> None:
    import keras
    import tensorflow as tf

    x_tr, y_tr, x_va, y_va = data()
    with trial.scope():
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"),
                                  keras.layers.Dense(10)])  # fmt: skip
        model.compile(optimizer=trial.optimizer(), metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=trial.config["jit_compile"])  # fmt: skip
    train_set = tf.data.Dataset.from_tensor_slices((x_tr, y_tr)).shuffle(len(x_tr), seed=0)
    train_set = prefetched(train_set.batch(trial.global_batch_size), trial.config["prefetch"])
    model.fit(train_set, epochs=1000, verbose=0,
              callbacks=[trial.keras_callback(validation_data=(x_va, y_va))])  # fmt: skip


def prefetched(ds, prefetch):
    """The ``prefetch`` knob on a ``tf.data`` pipeline: ``none``, ``autotune`` or a count."""
    import tensorflow as tf

    return ds if prefetch == "none" else ds.prefetch(tf.data.AUTOTUNE if prefetch == "autotune" else prefetch)


if __name__ == "__main__":
    result = perftune.Trial.from_best("keras-digits", framework="tensorflow", target=0.95).run(train)
    print(f"validation accuracy {result['metrics']['final_metric']:.3f} after "
          f"{result['metrics']['train_time_s']:.2f} s of training")  # fmt: skip
