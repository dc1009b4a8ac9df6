"""Models of other shapes than an MLP, for the FSDP tests (imported by the trial worker and by
the policy's unit tests).

The 8x8 digits as 64 tokens, each pixel's level ``0..16`` (the trainer hands every input over
as floats; the models cast them back to ``long``), except for the conv net, which sees the
image:

- ``encoder``: an embedding, a learned position table, a 1-layer ``nn.TransformerEncoder``
  and a linear head (``MultiheadAttention`` and its ``out_proj`` inside, as users build it);
- ``bag``: an ``nn.EmbeddingBag`` over (position, level) ids and an MLP head;
- ``resnet``: a conv stem, a ``ModuleList`` of two residual blocks with batch norm, a head.
"""

from __future__ import annotations

from perftune import Workload
from perftune.workloads.digits_data import digits_split

LEVELS, PIXELS, D = 17, 64, 32


def _levels(images):
    return (images * 16).reshape(-1, PIXELS).round()  # digits_split scaled the levels by 1/16


def _tokens():
    x_tr, y_tr, x_va, y_va = digits_split(8)
    return _levels(x_tr), y_tr, _levels(x_va), y_va


def encoder_model():
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(LEVELS, D)
            self.pos = nn.Parameter(torch.randn(PIXELS, D))
            layer = nn.TransformerEncoderLayer(D, 4, 2 * D, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=1)
            self.head = nn.Linear(D, 10)

        def forward(self, x):
            return self.head(self.encoder(self.embed(x.long()) + self.pos).mean(dim=1))

    return Encoder()


def bag_model():
    import torch
    from torch import nn

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = nn.EmbeddingBag(PIXELS * LEVELS, D, mode="sum")
            self.mlp = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, 10))

        def forward(self, x):
            ids = x.long() + LEVELS * torch.arange(PIXELS, device=x.device)  # (position, level)
            return self.mlp(self.bag(ids))

    return Bag()


def resnet_model():
    from torch import nn

    def block():
        return nn.Sequential(nn.Conv2d(D, D, 3, padding=1), nn.BatchNorm2d(D), nn.ReLU(),
                             nn.Conv2d(D, D, 3, padding=1), nn.BatchNorm2d(D))  # fmt: skip

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, D, 3, padding=1)
            self.blocks = nn.ModuleList([block(), block()])
            self.head = nn.Linear(D, 10)

        def forward(self, x):
            x = self.stem(x).relu()
            for b in self.blocks:
                x = (x + b(x)).relu()
            return self.head(x.mean(dim=(2, 3)))

    return ResNet()


def _workload(name: str, model, data) -> Workload:
    return Workload(name=name, framework="torch", model=model, data=data, target=0.9,
                    budget_s=10.0, description=f"{name} on 8x8 digits, for the FSDP tests")  # fmt: skip


def encoder() -> Workload:
    return _workload("encoder-digits", encoder_model, _tokens)


def bag() -> Workload:
    return _workload("bag-digits", bag_model, _tokens)


def resnet() -> Workload:
    return _workload("resnet-digits", resnet_model, lambda: digits_split(8))
