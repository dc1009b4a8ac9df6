"""Ports for a trial's ranks: drawn outside the kernel's ephemeral range, free, distinct."""

import random
import socket

import pytest

from perftune.backends import _ranks
from perftune.backends._ranks import free_ports


def test_ports_are_free_distinct_and_never_ones_the_kernel_hands_out():
    low, high = _ranks._ephemeral_range()
    ports = free_ports(8, random.Random(0))
    assert len(set(ports)) == 8
    assert not [p for p in ports if low <= p <= high]
    for p in ports:
        with socket.socket() as s:
            s.bind(("0.0.0.0", p))  # free on every interface, as a gRPC server binds it


class Draws:
    """A stand-in for ``random.Random`` that draws the given ports in turn."""

    def __init__(self, *ports: int) -> None:
        self.ports = iter(ports)

    def randint(self, lo: int, hi: int) -> int:
        port = next(self.ports)
        assert lo <= port <= hi
        return port


def test_a_port_in_use_is_skipped(monkeypatch):
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        taken = held.getsockname()[1]
        with socket.socket() as probe:  # a port free a moment ago
            probe.bind(("0.0.0.0", 0))
            free = probe.getsockname()[1]
        monkeypatch.setattr(_ranks, "_ephemeral_range", lambda: (65000, 65535))
        monkeypatch.setattr(_ranks, "PORT_RANGE", (min(taken, free), max(taken, free)))
        assert free_ports(1, Draws(taken, taken, free)) == [free]
        monkeypatch.setattr(_ranks, "PORT_RANGE", (taken, taken))
        with pytest.raises(OSError, match="no 1 free TCP ports"):
            free_ports(1, random.Random(0))
