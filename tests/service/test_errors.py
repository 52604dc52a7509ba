"""Every error code, through the real server, plus property tests of point validation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.client import Client
from densitywatch.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotCalibratedError,
    ResourceExhaustedError,
    StreamNotFoundError,
    UnavailableError,
)
from densitywatch.service.convert import SMALL_DECODE, PointEncoder
from tests.service.service_support import (
    hosts_data,
    hosts_schema,
    make_settings,
    metric,
    pair_data,
    running_server,
    scrape,
)


def test_unknown_stream_is_not_found(client: Client) -> None:
    with pytest.raises(StreamNotFoundError, match="nosuch") as e:
        client.score("nosuch", np.zeros((1, 2)))
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(StreamNotFoundError):
        client.get_stream("nosuch")


def test_uncalibrated_stream_is_failed_precondition(client: Client) -> None:
    with pytest.raises(NotCalibratedError, match="calibrate") as e:
        client.score("raw", np.zeros((1, 2)))
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION


def _raw_score(
    client: Client, stream: str, numbers: list[float], strings: list[str], count: int
) -> pb.ScoreResponse:
    request = pb.ScoreRequest(
        stream=stream, points=pb.Points(numbers=numbers, strings=strings, count=count)
    )
    return client._call(client.stub.Score, request, None)


def test_wrong_width_names_point_and_feature(client: Client) -> None:
    # 3 points of (cpu, mem, conns) need 9 numbers; 8 leaves point 2 without conns.
    with pytest.raises(InvalidArgumentError, match=r"point 2: feature 'conns'") as e:
        _raw_score(client, "hosts", [0.5] * 8, ["linux"] * 3, 3)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgumentError, match=r"point 1: feature 'os'"):
        _raw_score(client, "hosts", [0.5] * 9, ["linux"], 3)
    with pytest.raises(InvalidArgumentError, match="no string-typed features"):
        _raw_score(client, "alpha", [0.5] * 2, ["linux"], 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_name_point_and_feature(client: Client, bad: float) -> None:
    numbers, strings = hosts_data(4, seed=1)
    numbers[2, 1] = bad
    with pytest.raises(InvalidArgumentError, match=r"point 2: feature 'mem' is (nan|inf|-inf)"):
        client.score("hosts", numbers, strings)


def test_wrong_type_in_dict_record(client: Client) -> None:
    with pytest.raises(InvalidArgumentError, match=r"point 1: feature 'cpu' must be a number"):
        client.score(
            "hosts",
            [
                {"cpu": 0.5, "mem": 2.0, "conns": 10, "os": "linux"},
                {"cpu": "high", "mem": 2.0, "conns": 10, "os": "linux"},
            ],
        )
    with pytest.raises(InvalidArgumentError, match=r"point 0: feature 'os' must be a string"):
        client.score("hosts", [{"cpu": 0.5, "mem": 2.0, "conns": 10, "os": 3}])


def test_too_many_points_is_resource_exhausted(client: Client) -> None:
    with pytest.raises(ResourceExhaustedError, match="5001 points") as e:
        client.score("alpha", np.zeros((5001, 2)))
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(ResourceExhaustedError):
        client.sample("alpha", 5001)


def test_limits_message_size_and_queue(built_store: tuple[Path, dict]) -> None:
    settings_ = make_settings(
        built_store[0], max_message_bytes=64 * 1024, queue_limit=100, max_points_per_call=10_000
    )
    with running_server(settings_) as server, Client(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(ResourceExhaustedError):  # ~160 kB message
            client.score("alpha", np.zeros((10_000, 2)))
        with pytest.raises(ResourceExhaustedError, match="queue full"):
            client.score("alpha", np.zeros((101, 2)))
        assert len(client.score("alpha", np.zeros((100, 2))).log_prob) == 100
        samples = scrape(server.metrics_port)
        assert metric(samples, "densitywatch_queue_depth") == 0


def test_deadline_stops_queued_work(built_store: tuple[Path, dict]) -> None:
    """A call whose deadline passes while it waits behind a slow batch is never scored."""
    big_n = 300_000
    settings_ = make_settings(
        built_store[0],
        max_points_per_call=big_n,
        queue_limit=2 * big_n,
        batch_max_delay_ms=0,
        batch_concurrency=1,  # the small call must queue behind the big one
    )
    with running_server(settings_) as server, Client(f"127.0.0.1:{server.port}") as client:
        big = pair_data(big_n, 1, 0.0)
        done: list[int] = []
        slow = threading.Thread(
            target=lambda: done.append(len(client.score("alpha", big).log_prob))
        )
        slow.start()
        time.sleep(0.15)  # the big batch is being decoded or scored
        with pytest.raises(DeadlineExceededError) as e:
            client.score("alpha", pair_data(3, 2, 0.0), timeout=0.05)
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        slow.join()
        assert done == [big_n]
        time.sleep(0.1)
        samples = scrape(server.metrics_port)
        assert metric(samples, "densitywatch_points_scored_total", stream="alpha") == big_n
        codes = {k[1] for k in samples if k[0] == "densitywatch_request_duration_seconds_count"}
        assert (("code", "DEADLINE_EXCEEDED"), ("method", "Score")) in codes


def test_unavailable_while_loading(built_store: tuple[Path, dict]) -> None:
    settings_ = make_settings(built_store[0])
    with (
        running_server(settings_, load=False) as server,
        Client(f"127.0.0.1:{server.port}") as client,
    ):
        with pytest.raises(UnavailableError, match="loading") as e:
            client.score("alpha", np.zeros((1, 2)))
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(UnavailableError):
            client.list_streams()
        server.load()
        assert len(client.score("alpha", np.zeros((1, 2))).log_prob) == 1


# -- validation properties (the server's encoder against the library's) --------------------
SCHEMA = hosts_schema()
ENCODER = PointEncoder(SCHEMA)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
values = st.one_of(finite, st.just(float("nan")), st.just(float("inf")))


@settings(max_examples=150, deadline=None)
@given(
    # Up to 75 numbers: both sides of SMALL_DECODE (64), Python floats and numpy.
    n=st.integers(0, 25),
    extra_numbers=st.integers(-3, 3),
    extra_strings=st.integers(-2, 2),
    data=st.data(),
)
def test_decode_then_encode_agrees_with_schema(
    n: int, extra_numbers: int, extra_strings: int, data: st.DataObject
) -> None:
    n_numbers = max(0, 3 * n + extra_numbers)
    n_strings = max(0, n + extra_strings)
    numbers = data.draw(st.lists(values, min_size=n_numbers, max_size=n_numbers))
    strings = data.draw(
        st.lists(
            st.sampled_from(["linux", "mac", "windows", "beos", ""]),
            min_size=n_strings,
            max_size=n_strings,
        )
    )
    count = data.draw(st.sampled_from([n, 0]))  # 0: the server infers the count
    points = pb.Points(numbers=numbers, strings=strings, count=count)
    effective = count or -(-n_numbers // 3)
    well_formed = n_numbers == 3 * effective and n_strings == effective
    n = effective
    try:
        decoded, flat = ENCODER.decode_points(points, "hosts", 1000)
    except InvalidArgumentError as e:
        assert e.feature is not None and e.index is not None
        if well_formed:  # then the only possible fault is a non-finite value
            bad = np.argwhere(~np.isfinite(np.asarray(numbers).reshape(n, 3)))[0]
            assert (e.index, e.feature) == (bad[0], ["cpu", "mem", "conns"][bad[1]])
        else:
            assert e.reason in ("width", "type")
        return
    assert well_formed and np.isfinite(decoded).all()
    rows = [[s] for s in flat]
    np.testing.assert_array_equal(ENCODER.encode(decoded, flat), SCHEMA.encode(decoded, rows))


@pytest.mark.parametrize("n", [1, SMALL_DECODE // 3 + 1])
def test_finite_values_whose_sum_overflows_are_accepted(n: int) -> None:
    numbers = np.tile([1.5e308, 1.5e308, 1.0], (n, 1))
    points = pb.Points(numbers=numbers.ravel().tolist(), strings=["linux"] * n, count=n)
    decoded, _ = ENCODER.decode_points(points, "hosts", 1000)
    np.testing.assert_array_equal(decoded, numbers)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.5, 7.0, -0.0, 0.0, 3.0, 1e300]), min_size=1, max_size=8))
def test_numeric_vocabulary_lookup_agrees_with_schema(column: list[float]) -> None:
    from densitywatch.density.schema import FeatureKind, FeatureSpec, Schema

    schema = Schema(
        features=[
            FeatureSpec(name="n", kind=FeatureKind.CATEGORICAL, vocabulary=[7.0, 0.5, 0.0]),
            FeatureSpec(name="c"),
        ]
    )
    numbers = np.stack([np.asarray(column), np.ones(len(column))], axis=1)
    np.testing.assert_array_equal(PointEncoder(schema).encode(numbers, []), schema.encode(numbers))
