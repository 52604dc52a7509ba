"""What error messages tell a caller: the contract's status whatever the size of the echoed
input, the echoed values capped, no list of the other streams, no filesystem paths."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.client import Client
from densitywatch.density.artifact import MANIFEST, WEIGHTS, ArtifactStore
from densitywatch.service.server import DensityWatchServer
from tests.reliability.reliability_support import write_signed_manifest
from tests.service.service_support import copy_store, make_settings, running_server

TENANTS = 1200  # enough names that listing them overflows gRPC's 8 KiB metadata limit
ECHO = 200  # about this many characters of an echoed value
MESSAGE_BOUND = 1024  # characters in any status message here
RUN = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def tenant(i: int) -> str:
    return f"tenant-{i:04d}-payments-eu"


def _copy_as(store: ArtifactStore, source: tuple[str, str], stream: str) -> Path:
    """A copy of one version as version 000001 of `stream`, its manifest saying so."""
    dest = store.path(stream, "000001")
    shutil.copytree(store.path(*source), dest)
    body = json.loads((dest / MANIFEST).read_text())
    body.update(stream=stream, version="000001", parent_version=None)
    write_signed_manifest(dest, body)
    return dest


@pytest.fixture(scope="module")
def crowded(
    built_store: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DensityWatchServer, Path]]:
    """The test streams plus 1 200 uncalibrated tenants and `broken` (a calibrated version
    whose weights are truncated), under an absolute store path."""
    root = copy_store(built_store[0], tmp_path_factory.mktemp("crowded").resolve() / "store")
    store = ArtifactStore(root)
    for i in range(TENANTS):
        _copy_as(store, ("raw", "000001"), tenant(i))
    broken = _copy_as(store, ("alpha", "000002"), "broken")
    weights = broken / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with running_server(make_settings(root)) as server:
        yield server, root


def _status(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call(request, timeout=10)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def _assert_tells_nothing_else(details: str, root: Path, sent: str = "") -> None:
    assert len(details) <= MESSAGE_BOUND, details[:300]
    assert tenant(7) not in details and tenant(TENANTS - 1) not in details  # no stream list
    assert str(root) not in details and str(root.parent) not in details
    if len(sent) > ECHO:
        assert sent not in details


names = st.one_of(
    st.text(max_size=300),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(0, 20_000)),
    st.sampled_from(["alpha", "raw", "broken", tenant(3), tenant(3) + "x", ""]),
)


@RUN
@given(name=names)
@example(name="x" * 20_000)
@example(name=tenant(5)[:-1])  # a typo of a tenant's name
def test_any_stream_name_gets_the_contract_status(
    crowded: tuple[DensityWatchServer, Path], name: str
) -> None:
    server, root = crowded
    expected = {
        "alpha": grpc.StatusCode.OK,
        "raw": grpc.StatusCode.FAILED_PRECONDITION,
        "broken": grpc.StatusCode.FAILED_PRECONDITION,
    }
    if name.startswith("tenant-") and name in {tenant(i) for i in range(TENANTS)}:
        expected[name] = grpc.StatusCode.FAILED_PRECONDITION
    with Client(f"127.0.0.1:{server.port}") as client:
        request = pb.ScoreRequest(stream=name, points=pb.Points(numbers=[0.1, 0.2], count=1))
        code, details = _status(client.stub.Score, request)
        assert code == expected.get(name, grpc.StatusCode.NOT_FOUND), details[:300]
        _assert_tells_nothing_else(details, root, name)
        get_code, details = _status(client.stub.GetStream, pb.GetStreamRequest(stream=name))
        known = name in expected
        assert get_code == (grpc.StatusCode.OK if known else grpc.StatusCode.NOT_FOUND)
        _assert_tells_nothing_else(details, root, name)


@RUN
@given(
    request_id=st.one_of(
        st.text(max_size=300), st.builds(lambda n: "r" * n, st.integers(0, 20_000))
    )
)
def test_any_request_id_gets_the_contract_status(
    crowded: tuple[DensityWatchServer, Path], request_id: str
) -> None:
    server, root = crowded
    with Client(f"127.0.0.1:{server.port}") as client:
        bad = pb.ScoreRequest(
            stream="alpha",
            points=pb.Points(numbers=[0.1, 0.2, 0.3], count=1),
            request_id=request_id,
        )
        with pytest.raises(grpc.RpcError) as e:
            list(client.stub.ScoreStream(iter([bad]), timeout=10))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = e.value.details() or ""
        assert "stream 'alpha'" in details  # still says what was wrong
        _assert_tells_nothing_else(details, root, request_id)


def test_failed_streams_do_not_reveal_store_paths(
    crowded: tuple[DensityWatchServer, Path],
) -> None:
    server, root = crowded
    with Client(f"127.0.0.1:{server.port}") as client:
        info = client.get_stream("broken")
        assert info.state == pb.STREAM_STATE_FAILED
        assert "000001" in info.state_detail  # still says which version failed
        assert str(root) not in info.state_detail and "/" + WEIGHTS not in info.state_detail
        listed = {s.name: s for s in client.list_streams()}
        assert listed["broken"].state_detail == info.state_detail
        code, details = _status(
            client.stub.Score,
            pb.ScoreRequest(stream="broken", points=pb.Points(numbers=[0.1, 0.2], count=1)),
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert str(root) not in details
    # The operator still has the whole story in the server's own records.
    failures = server.registry.bad_versions()
    assert str(root) in failures[("broken", "000001")]
