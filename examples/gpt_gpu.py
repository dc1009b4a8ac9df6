"""A GPU-sized variant of the built-in ``gpt-tiny`` (same synthetic data source, same code).

``gpt-tiny`` is sized for seconds-long trials on a 2-core CPU, far too small to load an H100.
This one (12 layers x 768, 12 heads, 512 tokens: about GPT-2 small without its vocabulary) is
where bf16, ``torch.compile`` and the batch size decide most of the speed::

    perftune sweep --workload examples/gpt_gpu.py:gpt_gpu --device cuda --objective throughput
    python benchmarks/accelerators.py --device cuda --workloads examples/gpt_gpu.py:gpt_gpu

Not run on a GPU yet: no GPU has run this code (see docs/limits.md).
"""

from __future__ import annotations

from perftune.workloads.torch_gpt import make_gpt_workload


def gpt_gpu():
    return make_gpt_workload(vocab=4096, seq_len=512, d_model=768, n_layer=12, n_head=12,
                             n_train=65536, n_val=64, budget_s=300.0, name="gpt-gpu")  # fmt: skip
