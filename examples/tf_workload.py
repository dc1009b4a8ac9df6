"""A user's own TensorFlow / Keras workload for perftune, in both input forms.

Tune it with::

    perftune sweep --framework tensorflow --workload examples/tf_workload.py:make_workload
    perftune sweep --framework tensorflow --workload examples/tf_workload.py:make_pipeline_workload

The problem is the one of ``examples/my_workload.py`` (a 16-64-64-1 MLP regressor on synthetic
data, target validation R^2 0.94), so the PyTorch and TensorFlow best configs compare.

perftune owns the training loop (a ``tf.function`` step under a ``tf.distribute`` strategy, with
the batch size, optimizer, learning rate, precision, XLA, prefetch and threads it tunes). A
workload says *what* to train and *when it is good enough*:

* ``model()`` returns a fresh, *uncompiled* ``keras.Model`` (perftune builds the optimizer and
  never calls ``compile``/``fit``). It is called inside the trial process, under the strategy's
  scope and the precision policy: build layers there, do not cast them to a dtype yourself.
* ``data()`` returns ``(x_train, y_train, x_val, y_val)``. Either NumPy arrays (the first form:
  perftune feeds them through ``tf.data``: shuffle every epoch, batch, prefetch), or, as
  ``x_train``, a zero-argument callable returning an *unbatched* ``tf.data.Dataset`` of
  ``(features, target)`` pairs, with ``y_train`` None (the second form: your own pipeline, e.g.
  files, ``map`` preprocessing, augmentation; perftune shards it across workers, repeats,
  batches and prefetches it). ``data()`` runs in perftune's trial worker *before* trials are
  forked, where TensorFlow must not start its runtime: return arrays and callables, never
  tensors or datasets, and create datasets only inside the callable.
* ``loss`` / ``metric``: names (``"mse"``, ``"cross_entropy"``, ``"accuracy"``) or callables.
  A callable loss gets ``(outputs, targets)`` as float32 / target tensors of one replica's batch
  inside the compiled step and returns the mean over it; a callable metric gets the float32
  outputs on the whole validation set (a ``tf.Tensor``) and the validation targets as ``data()``
  returned them, and returns a float.

Import TensorFlow inside the factories only: the sweep process never imports it.
"""

from __future__ import annotations

import numpy as np

from perftune import Workload

N_TRAIN, N_VAL, N_FEATURES, HIDDEN = 8192, 2048, 16, 64
SEED = 0


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_val, y_val)``: a nonlinear function of 16 Gaussian inputs, float32,
    ``y`` of shape ``(N, 1)`` like the model's output (deterministic, nothing downloaded)."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((N_TRAIN + N_VAL, N_FEATURES)).astype(np.float32)
    w1, w2, w3, w4 = (rng.standard_normal((N_FEATURES, 1)) / np.sqrt(N_FEATURES) for _ in range(4))
    y = np.sin(3.0 * x @ w1) + 0.5 * (x @ w2) ** 2 + np.cos(2.0 * x @ w3) * (x @ w4)
    y = y + 0.05 * rng.standard_normal(y.shape)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def make_pipeline_data():
    """The same data with the training set as a ``tf.data`` pipeline: a callable building an
    unbatched dataset of ``(x, y)`` pairs (shuffled every epoch, here with a small Gaussian
    input jitter as on-the-fly augmentation), run inside each trial process."""
    x_tr, y_tr, x_va, y_va = make_data()

    def train_dataset():
        import tensorflow as tf

        def jitter(x, y):
            return x + tf.random.normal(tf.shape(x), stddev=0.01, seed=SEED), y

        ds = tf.data.Dataset.from_tensor_slices((x_tr, y_tr))
        ds = ds.shuffle(len(x_tr), seed=SEED, reshuffle_each_iteration=True)
        return ds.map(jitter, num_parallel_calls=tf.data.AUTOTUNE)

    return train_dataset, None, x_va, y_va


def make_model():
    """A fresh 16-64-64-1 Keras MLP (uncompiled)."""
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((N_FEATURES,)),
        layers.Dense(HIDDEN, activation="relu"),
        layers.Dense(HIDDEN, activation="relu"),
        layers.Dense(1),
    ])  # fmt: skip


def r_squared(outputs, targets) -> float:
    """R^2 over the whole validation set (higher is better): ``outputs`` a float32 tensor,
    ``targets`` the NumPy array ``data()`` returned."""
    out = np.asarray(outputs, dtype=np.float64).reshape(targets.shape)
    residual = ((out - targets) ** 2).sum()
    total = ((targets - targets.mean()) ** 2).sum()
    return float(1.0 - residual / total)


def _workload(name: str, data) -> Workload:
    return Workload(
        name=name,
        framework="tensorflow",
        model=make_model,
        data=data,
        loss="mse",
        metric=r_squared,
        target=0.94,
        mode="max",
        budget_s=30.0,
        eval_interval_s=0.1,
        flops_per_sample=6.0 * (N_FEATURES * HIDDEN + HIDDEN * HIDDEN + HIDDEN),
        description="16-64-64-1 Keras MLP regressor on synthetic data; target validation R^2 0.94",
    )


def make_workload() -> Workload:
    """The arrays form: perftune builds the ``tf.data`` input pipeline."""
    return _workload("synthetic-regression", make_data)


def make_pipeline_workload() -> Workload:
    """The ``tf.data`` form: your own pipeline, batched and prefetched by perftune."""
    return _workload("synthetic-regression-tfdata", make_pipeline_data)
