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


def test_a_port_in_use_is_skipped(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(_ranks, "_ephemeral_range", lambda: (taken + 10, taken + 20))
        monkeypatch.setattr(_ranks, "PORT_RANGE", (taken, taken + 1))
        for seed in range(5):
            assert free_ports(1, random.Random(seed)) == [taken + 1]
        with pytest.raises(OSError, match="no 2 free TCP ports"):
            free_ports(2, random.Random(0))
