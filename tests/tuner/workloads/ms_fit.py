"""A MindSpore ``Model.train`` script made tunable through ``trial.mindspore_callback``: the
loop stays MindSpore's (tests/tuner/test_backend_mindspore.py runs it as a trial)."""

from __future__ import annotations

import numpy as np

import perftune


def data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split((x / 16.0).astype(np.float32), y.astype(np.int32),
                                              test_size=0.2, random_state=0, stratify=y)  # fmt: skip
    return x_tr, y_tr, x_va, y_va


@perftune.trainable(name="ms-fit-digits", target=0.9, framework="mindspore", budget_s=30,
                 eval_interval_s=0.5)  # fmt: skip
def train(trial: perftune.Trial) -> None:
    import mindspore as ms
    from mindspore import nn
    from mindspore.train import Model

    x_tr, y_tr, x_va, y_va = data()

    def dataset(x, y, batch, shuffle):
        ds = ms.dataset.NumpySlicesDataset({"x": x, "y": y}, shuffle=shuffle)
        return ds.batch(batch, drop_remainder=shuffle)

    net = trial.prepare(nn.SequentialCell(nn.Dense(64, 128), nn.ReLU(), nn.Dense(128, 10)))
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    model = Model(net, loss_fn=loss, optimizer=trial.optimizer(net.trainable_params()),
                  metrics={"accuracy"})  # fmt: skip
    val = dataset(x_va, y_va, 360, False)
    callback = trial.mindspore_callback(evaluate=lambda: model.eval(val, dataset_sink_mode=False)["accuracy"])
    model.train(200, dataset(x_tr, y_tr, trial.config["batch_size"], True), callbacks=[callback],
                dataset_sink_mode=False)  # fmt: skip
