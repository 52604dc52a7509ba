"""The light client under careless use: it raises rather than aborting its host process,
and an empty sample is an empty result."""

from __future__ import annotations

import subprocess
import sys

import pytest

from densitywatch.client import Client

HALF_PAIR = """
from densitywatch.client import Client
for kwargs in ({"client_certificate": b"-----BEGIN CERTIFICATE-----"},
               {"client_key": b"-----BEGIN PRIVATE KEY-----"}):
    try:
        Client("127.0.0.1:1", **kwargs)
    except ValueError as e:
        print("ValueError:", e)
"""


def test_half_a_client_key_pair_raises_instead_of_aborting() -> None:
    # In a child process: before the check, grpc ended the process with SIGABRT.
    done = subprocess.run(
        [sys.executable, "-c", HALF_PAIR], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("client_certificate" in line for line in lines)
    with pytest.raises(ValueError, match="together"):
        Client("127.0.0.1:1", client_key=b"key")


def test_sampling_zero_records_is_an_empty_result(client: Client) -> None:
    empty = client.sample("hosts", 0, seed=1)
    assert empty.numbers.shape == (0, 3) and empty.strings == [] and empty.records() == []
    assert empty.model_version == "000002"
