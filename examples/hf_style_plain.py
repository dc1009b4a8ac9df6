"""A small transformer text classifier in the shape real training code has (Hugging Face style):
a ``Dataset`` of token lists, a ``DataLoader`` with a padding collate function, dict batches,
``model(**batch)`` returning an output with ``.loss``, AdamW with a linear-warmup schedule,
gradient clipping, and an evaluation of its own.

``examples/hf_style_plain.py`` is the plain script, before perftune; ``examples/hf_style.py`` is
the same training made tunable through ``perftune.Trial`` (docs/your-code.md shows the diff)::

    perftune sweep --workload examples/hf_style.py:train --trials 20
    python examples/hf_style.py          # trains with the config the sweep stored

The data is synthetic and made with a fixed seed: sequences of random tokens in which one of
four marker tokens occurs most often; the label is that marker.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

VOCAB, MAX_LEN, CLASSES, D_MODEL = 96, 48, 4, 64


class SyntheticTexts(Dataset):
    """``n`` token sequences of 16-48 tokens (0 is padding); the label is the marker token
    (1..4) that occurs most often."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            length = int(torch.randint(16, MAX_LEN + 1, (1,), generator=g))
            tokens = torch.randint(CLASSES + 1, VOCAB, (length,), generator=g)
            label = int(torch.randint(0, CLASSES, (1,), generator=g))
            counts = torch.randint(0, 3, (CLASSES,), generator=g)
            counts[label] = 3 + int(torch.randint(0, 3, (1,), generator=g))
            markers = torch.cat([torch.full((int(c),), k + 1) for k, c in enumerate(counts)])
            places = torch.randperm(length, generator=g)[: len(markers)]
            tokens[places] = markers[: len(places)]
            self.items.append((tokens.tolist(), label))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        tokens, label = self.items[i]
        return {"input_ids": tokens, "label": label}


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of the batch; an attention mask marks the real tokens."""
    width = max(len(it["input_ids"]) for it in items)
    ids = torch.zeros(len(items), width, dtype=torch.long)
    for row, it in enumerate(items):
        ids[row, : len(it["input_ids"])] = torch.tensor(it["input_ids"])
    return {"input_ids": ids, "attention_mask": ids != 0,
            "labels": torch.tensor([it["label"] for it in items])}  # fmt: skip


@dataclass
class ClassifierOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class TinyClassifier(nn.Module):
    """Token and position embeddings, a 2-layer transformer encoder, mean pooling, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL, padding_idx=0)
        self.pos = nn.Embedding(MAX_LEN, D_MODEL)
        layer = nn.TransformerEncoderLayer(D_MODEL, 4, 2 * D_MODEL, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, input_ids, attention_mask, labels=None) -> ClassifierOutput:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.encoder(self.embed(input_ids) + self.pos(positions), src_key_padding_mask=~attention_mask)
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        logits = self.head((h * mask).sum(1) / mask.sum(1))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ClassifierOutput(logits=logits, loss=loss)


train_set, val_set = SyntheticTexts(4000, seed=0), SyntheticTexts(500, seed=1)


def evaluate(model: nn.Module) -> float:
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    with torch.no_grad():
        for batch in DataLoader(val_set, batch_size=250, collate_fn=collate):
            batch = {k: v.to(device) for k, v in batch.items()}
            correct += int((model(**batch).logits.argmax(-1) == batch["labels"]).sum())
    model.train()
    return correct / len(val_set)


def train(batch_size=32, lr=1e-3, epochs=10, target=0.98, device="cpu") -> float:
    torch.manual_seed(0)
    model = TinyClassifier().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, collate_fn=collate)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 50))
    acc = 0.0
    steps = 0
    for _ in range(epochs):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            schedule.step()
            opt.zero_grad()
            steps += 1
            if steps % 25 == 0:
                acc = evaluate(model)
                if acc >= target:
                    return acc
    return acc


if __name__ == "__main__":
    print(f"validation accuracy {train():.3f}")
