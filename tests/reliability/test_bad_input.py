"""Generated bad input against the real server: every call gets the status the contract
names, the server keeps serving, and the metrics account for every call."""

from __future__ import annotations

import math
import socket
from collections import Counter
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.client import Client
from densitywatch.service.server import DensityWatchServer
from tests.reliability.reliability_support import (
    MAX_MESSAGE_BYTES,
    MAX_POINTS,
    code_counts,
    invalid_total,
)
from tests.service.service_support import hosts_data, scrape

# (number-typed, string-typed) widths of the served streams; None: not servable.
WIDTHS: dict[str, tuple[int, int] | None] = {"alpha": (2, 0), "hosts": (3, 1), "raw": None}
SCORE = "/densitywatch.v1.DensityWatch/Score"
SCORE_STREAM = "/densitywatch.v1.DensityWatch/ScoreStream"
RUN = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
GOOD_CODES = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}

numbers_ = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0]),
)
strings_ = st.one_of(st.sampled_from(["linux", "mac", "windows"]), st.text(max_size=8))


def expected_status(stream: str, numbers: list[float], strings: list[str], count: int) -> str:
    """The contract, stated independently of the server's code."""
    if stream not in WIDTHS:
        return "NOT_FOUND"
    widths = WIDTHS[stream]
    if widths is None:
        return "FAILED_PRECONDITION"
    n_num, n_str = widths
    n = count or -(-len(numbers) // n_num)
    if n > MAX_POINTS:
        return "RESOURCE_EXHAUSTED"
    if len(numbers) != n * n_num or len(strings) != n * n_str:
        return "INVALID_ARGUMENT"
    if not all(math.isfinite(v) for v in numbers):
        return "INVALID_ARGUMENT"
    return "OK"


def status_of(call: Any, request: Any) -> tuple[str, Any]:
    try:
        return "OK", call(request, timeout=10)
    except grpc.RpcError as e:
        return e.code().name, e


def assert_serving(client: Client) -> None:
    numbers, strings = hosts_data(3, seed=0)
    assert len(client.score("hosts", numbers, strings).log_prob) == 3


@st.composite
def score_requests(draw: st.DrawFn) -> tuple[str, list[float], list[str], int]:
    stream = draw(st.sampled_from(["alpha", "hosts", "raw", "nosuch", ""]))
    n = draw(st.integers(0, 6))
    n_num, n_str = WIDTHS.get(stream) or (2, 0)
    n_numbers = max(0, n * n_num + draw(st.sampled_from([0, 0, 0, -1, 1, 3])))
    n_strings = max(0, n * n_str + draw(st.sampled_from([0, 0, -1, 1])))
    numbers = draw(st.lists(numbers_, min_size=n_numbers, max_size=n_numbers))
    strings = draw(st.lists(strings_, min_size=n_strings, max_size=n_strings))
    count = draw(st.sampled_from([n, n, 0, n + 1, MAX_POINTS + 1, 2**32 - 1]))
    return stream, numbers, strings, count


def test_generated_score_calls_get_their_status_and_are_all_counted(
    server: DensityWatchServer, client: Client
) -> None:
    before = scrape(server.metrics_port)
    seen: Counter[str] = Counter()
    invalid = 0

    # Both outcomes are always exercised, whatever Hypothesis draws (a run on a loaded machine
    # once drew a single INVALID_ARGUMENT case).
    @RUN
    @given(score_requests())
    @example(("alpha", [0.0, 1.0, 2.0, 3.0], [], 2))
    @example(("alpha", [0.5, -1.0], [], 0))
    @example(("alpha", [0.0, 1.0, 2.0], [], 2))
    @example(("alpha", [0.0, math.nan], [], 1))
    def check(case: tuple[str, list[float], list[str], int]) -> None:
        nonlocal invalid
        stream, numbers, strings, count = case
        request = pb.ScoreRequest(
            stream=stream, points=pb.Points(numbers=numbers, strings=strings, count=count)
        )
        code, result = status_of(client.stub.Score, request)
        seen[code] += 1
        assert code == expected_status(stream, numbers, strings, count), result
        if code == "OK":
            n = count or len(numbers) // WIDTHS[stream][0]  # type: ignore[index]
            assert len(result.log_prob) == n and np.isfinite(result.log_prob).all()
            assert result.model_version == "000002"
        elif code == "INVALID_ARGUMENT":
            invalid += 1
            assert repr(stream) in result.details()  # and, where known, point and feature

    check()
    assert_serving(client)
    seen["OK"] += 1
    after = scrape(server.metrics_port)
    delta = {
        code: n - code_counts(before, "Score").get(code, 0)
        for code, n in code_counts(after, "Score").items()
    }
    assert {c: n for c, n in delta.items() if n} == dict(seen)
    assert invalid_total(after) - invalid_total(before) == invalid
    assert seen["OK"] > 1 and seen["INVALID_ARGUMENT"] > 1


@RUN
@given(bad=st.binary(min_size=1, max_size=12).filter(lambda b: not _is_utf8(b)))
def test_invalid_utf8_in_a_categorical_value_is_invalid_argument(
    client: Client, server: DensityWatchServer, bad: bytes
) -> None:
    # protobuf's Python API cannot build such a message: patch the encoded bytes instead.
    placeholder = "Z" * len(bad)
    numbers, _ = hosts_data(2, seed=1)
    request = pb.ScoreRequest(
        stream="hosts",
        points=pb.Points(numbers=numbers.ravel().tolist(), strings=["linux", placeholder]),
    )
    payload = request.SerializeToString().replace(placeholder.encode(), bad)
    code, result = status_of(_raw(client, SCORE), payload)
    assert code == "INVALID_ARGUMENT", result
    assert "UTF-8" in result.details()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _raw(client: Client, method: str, streaming: bool = False) -> Any:
    channel = client._channel
    if streaming:
        return channel.stream_stream(method, lambda b: b, lambda b: b)
    return channel.unary_unary(method, lambda b: b, lambda b: b)


@RUN
@given(payload=st.binary(max_size=2048))
def test_garbage_protobuf_payloads_never_get_internal(
    client: Client, server: DensityWatchServer, payload: bytes
) -> None:
    code, result = status_of(_raw(client, SCORE), payload)
    assert code in GOOD_CODES, result
    if code == "OK":  # garbage that happens to parse: it named a real stream
        assert pb.ScoreResponse.FromString(result).stream in WIDTHS


def test_a_bad_message_mid_stream_ends_that_stream_only(client: Client) -> None:
    numbers, strings = hosts_data(2, seed=2)
    good = client.score_request("hosts", numbers, strings).SerializeToString()
    garbage = b"\x0a\xff\xff\xff"
    requests = iter([good, good, garbage, good])
    responses = []
    with pytest.raises(grpc.RpcError) as e:
        for r in _raw(client, SCORE_STREAM, streaming=True)(requests, timeout=10):
            responses.append(pb.ScoreResponse.FromString(r))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed request message" in e.value.details()
    assert [len(r.log_prob) for r in responses] == [2, 2]
    assert_serving(client)


@pytest.mark.parametrize("streaming", [False, True])
def test_oversized_messages_are_resource_exhausted(client: Client, streaming: bool) -> None:
    big = pb.ScoreRequest(stream="alpha", points=pb.Points(numbers=[0.5] * MAX_MESSAGE_BYTES))
    with pytest.raises(grpc.RpcError) as e:
        if streaming:
            list(client.stub.ScoreStream(iter([big]), timeout=10))
        else:
            client.stub.Score(big, timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_serving(client)


def test_empty_and_huge_batches(client: Client) -> None:
    empty = client.score("alpha", np.zeros((0, 2)))
    assert (len(empty.log_prob), empty.model_version) == (0, "000002")
    for count in (MAX_POINTS + 1, 2**32 - 1):
        request = pb.ScoreRequest(stream="alpha", points=pb.Points(numbers=[0.0, 0.0], count=count))
        code, result = status_of(client.stub.Score, request)
        assert code == "RESOURCE_EXHAUSTED" and "split the batch" in result.details()
    assert status_of(client.stub.Sample, pb.SampleRequest(stream="alpha", n=2**31))[0] == (
        "RESOURCE_EXHAUSTED"
    )


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    streams=st.lists(st.sampled_from(["alpha", "beta", "nosuch", "raw"]), max_size=3),
    priors=st.lists(st.sampled_from([0.5, 1.0, 0.0, -1.0, math.nan, math.inf]), max_size=3),
)
def test_generated_classify_calls(
    client: Client, server: DensityWatchServer, streams: list[str], priors: list[float]
) -> None:
    points = pb.Points(numbers=[0.1, 0.2])
    request = pb.ClassifyRequest(streams=streams, points=points, priors=priors)
    code, result = status_of(client.stub.Classify, request)
    if (
        not streams
        or len(set(streams)) != len(streams)
        or (
            priors
            and (
                len(priors) != len(streams)
                or not all(math.isfinite(p) and p >= 0 for p in priors)
                or sum(priors) <= 0
            )
        )
    ):
        assert code == "INVALID_ARGUMENT"
    elif {"nosuch", "raw"} & set(streams):  # the first unservable candidate decides
        first = next(s for s in streams if s in ("nosuch", "raw"))
        assert code == ("NOT_FOUND" if first == "nosuch" else "FAILED_PRECONDITION")
    else:
        assert code == "OK", result
        assert math.isclose(sum(result.posterior), 1.0, rel_tol=1e-9)


# -- bytes that are not gRPC at all ---------------------------------------------------------
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _send_raw(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(data)
        s.settimeout(0.2)
        try:
            while s.recv(4096):
                pass
        except (TimeoutError, ConnectionError):
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=4096), preface=st.booleans())
def test_random_bytes_on_the_wire_do_not_hurt_the_server(
    server: DensityWatchServer, client: Client, data: bytes, preface: bool
) -> None:
    _send_raw(server.port, (PREFACE if preface else b"") + data)
    assert_serving(client)


def test_malformed_http2_frames_and_half_open_connections(
    server: DensityWatchServer, client: Client
) -> None:
    frames = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        PREFACE + b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x64",
        PREFACE + b"\xff\xff\xff\x01\x05\x00\x00\x00\x01",  # 16 MiB HEADERS frame, no body
        PREFACE + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x7f\xff\xff\xff",  # window overflow
        PREFACE[:10],
    ]
    for data in frames:
        _send_raw(server.port, data)
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        for s in held:
            s.sendall(PREFACE[:5])
        assert_serving(client)
    finally:
        for s in held:
            s.close()
    assert_serving(client)
