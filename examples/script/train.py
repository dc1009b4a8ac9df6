"""A plain argparse training script that perftune tunes by launching it (it is never imported).

Run it on its own, as always::

    python examples/script/train.py --batch-size 64 --lr 0.003

Tune it: perftune fills the ``{knob}`` fields of the command per trial and runs it::

    perftune sweep --name script-digits --target 0.95 --eval-interval 0.1 --space examples/script/space.yaml \\
        -- python examples/script/train.py --batch-size {batch_size} --lr {learning_rate}

and on two CPU processes (gloo) under torchrun, which starts ``{world_size}`` ranks::

    perftune sweep --name script-digits-ddp --target 0.95 --eval-interval 0.1 --space examples/script/space-ddp.yaml \\
        -- torchrun --standalone --nproc-per-node {world_size} examples/script/train.py \\
           --batch-size {batch_size} --lr {learning_rate}

The only perftune lines are ``perftune.Trial.connect()`` and the ``trial.`` calls: ``step`` after
each optimizer step, ``evaluating``/``report`` when an evaluation is due. Launched by perftune
they measure and report; run on their own they are a clock (``trial.should_stop()`` stays
False) and the script trains for its ``--epochs``. ``trial.prepare`` and ``trial.sampler`` put
the model under DDP and split the data when torchrun started several ranks.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import perftune


def data():
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1]; a stratified 80/20 split."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x / 16.0, y, test_size=0.2, random_state=0, stratify=y)
    as_x, as_y = (lambda a: torch.tensor(a, dtype=torch.float32)), torch.tensor
    return torch.utils.data.TensorDataset(as_x(x_tr), as_y(y_tr)), (as_x(x_va), as_y(y_va))


def evaluate(model, val) -> float:
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        acc = (model(val[0].to(device)).argmax(1).cpu() == val[1]).float().mean().item()
    model.train()
    return acc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    trial = perftune.Trial.connect()
    train_set, val = data()
    model = trial.prepare(torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, sampler=trial.sampler(train_set))
    acc = 0.0
    for _ in range(args.epochs):
        for xb, yb in loader:
            xb, yb = xb.to(trial.device), yb.to(trial.device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            trial.step(samples=len(xb), loss=loss)
            if trial.eval_due():
                with trial.evaluating():
                    acc = evaluate(model, val)
                trial.report(acc)
        if trial.should_stop():
            break
    if trial.is_chief:
        print(f"validation accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
