"""Devices as the sweep process sees them: selection and a stable fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from perftune.errors import UsageError


@dataclass(frozen=True)
class Device:
    framework: str
    kind: str  # "cpu", "cuda", ...
    name: str
    count: int
    memory_bytes: int | None
    cores: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Stable across runs: hardware identity only (versions are recorded, not hashed)."""
        gib = round((self.memory_bytes or 0) / 2**30)
        key = [self.framework, self.kind, self.name, self.count, gib, self.cores]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    @property
    def indices(self) -> list[int]:
        """The device indices this record covers (``0..count-1`` unless discovery said)."""
        return [int(i) for i in self.info.get("indices") or range(self.count)]

    @property
    def spec(self) -> str:
        """The ``--device`` value that selects exactly this record."""
        return f"{self.kind}:{self.indices[0]}" if self.info.get("indices") else self.kind

    @property
    def short(self) -> str:
        return self.fingerprint[:12]

    @property
    def resources(self) -> dict[str, int | float]:
        """What search spaces may refer to in bounds and constraints."""
        return {
            "cores": self.cores,
            "device_count": self.count,
            "memory_gib": round((self.memory_bytes or 0) / 2**30, 1),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"framework": self.framework, "kind": self.kind, "name": self.name,
                "count": self.count, "memory_bytes": self.memory_bytes, "cores": self.cores,
                "fingerprint": self.fingerprint, **{k: v for k, v in self.info.items()
                                                    if k not in ("kind", "name", "count")}}  # fmt: skip

    @classmethod
    def from_discovery(cls, framework: str, d: dict[str, Any]) -> Device:
        return cls(framework=framework, kind=d["kind"], name=d["name"], count=int(d["count"]),
                   memory_bytes=d.get("memory_bytes"), cores=int(d.get("cores", 1)),
                   info={k: v for k, v in d.items()
                         if k not in ("kind", "name", "count", "memory_bytes", "cores")})  # fmt: skip


def select(devices: list[Device], wanted: str) -> Device:
    """Pick the device a ``--device`` value names: a kind (``cpu``, ``cuda``) or ``kind:index``."""
    kind, _, index = wanted.partition(":")
    same = [d for d in devices if d.kind == kind]
    if same and not index:
        return same[0]
    if same:
        # A heterogeneous box lists one record per model, each with the ``indices`` it covers.
        everything = [i for d in same for i in d.indices]
        for dev in same:
            if index.isdigit() and int(index) in dev.indices:
                return dev
        raise UsageError(f"--device {wanted}: no such {kind} device (found: "
                         f"{', '.join(f'{kind}:{i}' for i in everything)})")  # fmt: skip
    found = ", ".join(d.kind for d in devices) or "none"
    raise UsageError(f"--device {wanted}: not found on this machine (found: {found})")
