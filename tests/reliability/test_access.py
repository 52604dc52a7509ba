"""Access control through the real server: TLS, mutual TLS, bearer tokens (settings or a
file of hashes), open health probes, tokens never logged, malicious artifacts refused, and
safe default limits."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from densitywatch.client import Client
from densitywatch.density.artifact import MANIFEST, WEIGHTS, ArtifactStore
from densitywatch.errors import AccessConfigError, DensityWatchError
from densitywatch.service.auth import bearer_token
from densitywatch.service.server import DensityWatchServer
from densitywatch.service.settings import ServiceSettings
from tests.reliability.reliability_support import (
    load_failures,
    plant_version,
    wait_for,
    write_signed_manifest,
)
from tests.service.service_support import copy_store, make_settings, metric, running_server, scrape

X = np.zeros((2, 2))


# -- certificates -----------------------------------------------------------------------------
@dataclass
class Identity:
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    folder: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    ca: bool = False,
) -> tuple[Identity, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    identity = Identity(folder / f"{name}.crt", folder / f"{name}.key")
    identity.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    identity.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return identity, cert, key


@dataclass
class PKI:
    ca: Identity
    server: Identity
    client: Identity
    rogue_ca: Identity
    rogue_client: Identity


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = _issue(folder, "ca", None, ca=True)
    rogue_ca, rogue_cert, rogue_key = _issue(folder, "rogue-ca", None, ca=True)
    return PKI(
        ca=ca,
        server=_issue(folder, "server", (ca_cert, ca_key))[0],
        client=_issue(folder, "client", (ca_cert, ca_key))[0],
        rogue_ca=rogue_ca,
        rogue_client=_issue(folder, "rogue-client", (rogue_cert, rogue_key))[0],
    )


def _target(port: int) -> str:
    return f"localhost:{port}"


def _fails(client: Client) -> grpc.StatusCode:
    with pytest.raises(DensityWatchError) as e:
        client.score("alpha", X, timeout=2)
    return e.value.code


# -- TLS ----------------------------------------------------------------------------------------
def test_tls(built_store: tuple[Path, dict], pki: PKI) -> None:
    settings = make_settings(
        built_store[0], tls_cert_file=pki.server.cert, tls_key_file=pki.server.key
    )
    with running_server(settings) as server:
        with Client(_target(server.port), root_certificates=pki.ca.cert) as client:
            assert len(client.score("alpha", X).log_prob) == 2
        with Client(_target(server.port)) as plaintext:
            assert _fails(plaintext) == grpc.StatusCode.UNAVAILABLE
        with Client(_target(server.port), root_certificates=pki.rogue_ca.cert) as untrusted:
            assert _fails(untrusted) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls(built_store: tuple[Path, dict], pki: PKI) -> None:
    settings = make_settings(
        built_store[0],
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        tls_client_ca_file=pki.ca.cert,
    )
    with running_server(settings) as server:
        target = _target(server.port)
        with Client(
            target,
            root_certificates=pki.ca.cert,
            client_certificate=pki.client.cert,
            client_key=pki.client.key,
        ) as client:
            assert len(client.score("alpha", X).log_prob) == 2
        with Client(target, root_certificates=pki.ca.cert) as anonymous:
            assert _fails(anonymous) == grpc.StatusCode.UNAVAILABLE
        with Client(
            target,
            root_certificates=pki.ca.cert,
            client_certificate=pki.rogue_client.cert,
            client_key=pki.rogue_client.key,
        ) as rogue:
            assert _fails(rogue) == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_are_checked(built_store: tuple[Path, dict], pki: PKI, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="together"):
        ServiceSettings(tls_cert_file=pki.server.cert)
    with pytest.raises(ValueError, match="mutual TLS"):
        ServiceSettings(tls_client_ca_file=pki.ca.cert)
    settings = make_settings(
        built_store[0], tls_cert_file=tmp_path / "absent.crt", tls_key_file=pki.server.key
    )
    with pytest.raises(AccessConfigError, match=r"absent\.crt"), running_server(settings):
        pass


# -- tokens -------------------------------------------------------------------------------------
TOKENS = ["alpha-token-7f3a9c", "beta-token-51e0d2"]
HASHED = "hashed-token-c0ffee42"


@pytest.fixture(scope="module")
def token_server(
    built_store: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DensityWatchServer]:
    hashes_file = tmp_path_factory.mktemp("auth") / "tokens.sha256"
    digest = hashlib.sha256(HASHED.encode()).hexdigest()
    hashes_file.write_text(f"# ops team, rotated monthly\n\n{digest.upper()}  # ci\n")
    settings = make_settings(built_store[0], auth_tokens=TOKENS, auth_token_hashes_file=hashes_file)
    with running_server(settings) as server:
        yield server


def _client(server: DensityWatchServer, token: str | None = None) -> Client:
    return Client(f"127.0.0.1:{server.port}", token=token, timeout=10)


def test_calls_need_a_valid_bearer_token(token_server: DensityWatchServer) -> None:
    for token in [*TOKENS, HASHED]:
        with _client(token_server, token) as client:
            assert len(client.score("alpha", X).log_prob) == 2
            assert [r.model_version for r in client.score_stream("alpha", [X, X])] == ["000002"] * 2
    for bad in [None, "wrong", TOKENS[0] + "x", hashlib.sha256(HASHED.encode()).hexdigest()]:
        with _client(token_server, bad) as client:
            with pytest.raises(DensityWatchError, match="bearer token") as e:
                client.score("alpha", X)
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(DensityWatchError) as e:
                list(client.score_stream("alpha", [X]))
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(DensityWatchError) as e:
                client.list_streams()
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    samples = scrape(token_server.metrics_port)
    refused = metric(
        samples,
        "densitywatch_request_duration_seconds_count",
        method="Score",
        code="UNAUTHENTICATED",
    )
    assert refused == 4


def test_unauthenticated_payloads_are_not_parsed(token_server: DensityWatchServer) -> None:
    with _client(token_server) as client:
        garbage = client._channel.unary_unary(
            "/densitywatch.v1.DensityWatch/Score", lambda b: b, lambda b: b
        )
        with pytest.raises(grpc.RpcError) as e:
            garbage(b"\x0a\xff\xff", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _health(port: int, metadata: tuple[tuple[str, str], ...] | None = None) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5, metadata=metadata
            )
        except grpc.RpcError as e:
            return e.code()
        return grpc.StatusCode.OK


def _reflection(port: int) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        try:
            responses = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        except grpc.RpcError as e:
            return e.code()
        assert responses[0].list_services_response.service
        return grpc.StatusCode.OK


def test_probes_stay_open_as_configured(built_store: tuple[Path, dict]) -> None:
    with running_server(make_settings(built_store[0], auth_tokens=TOKENS)) as server:
        assert _health(server.port) == grpc.StatusCode.OK  # default: health open
        assert _reflection(server.port) == grpc.StatusCode.UNAUTHENTICATED  # default: closed
    settings = make_settings(
        built_store[0], auth_tokens=TOKENS, auth_health_open=False, auth_reflection_open=True
    )
    with running_server(settings) as server:
        assert _health(server.port) == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", f"Bearer {TOKENS[1]}"),)
        assert _health(server.port, good) == grpc.StatusCode.OK
        assert _reflection(server.port) == grpc.StatusCode.OK


def test_tokens_are_never_logged(
    built_store: tuple[Path, dict], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(built_store[0], auth_tokens=TOKENS)
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert not any(t in text for t in TOKENS)
    with running_server(settings) as server:
        for token in [TOKENS[0], "typo-" + TOKENS[1]]:
            with _client(server, token) as client:
                try:
                    client.score("alpha", X)
                except DensityWatchError as e:
                    assert TOKENS[1] not in e.message
    assert caplog.records and "token auth" in caplog.text
    assert not any(t in caplog.text for t in TOKENS)


def test_token_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DENSITYWATCH_AUTH_TOKENS", '["a-token", "b-token"]')
    assert [t.get_secret_value() for t in ServiceSettings().auth_tokens] == ["a-token", "b-token"]
    assert bearer_token([("authorization", "bearer  tok ")]) == "tok"
    assert bearer_token([("authorization", "Basic dXNlcg==")]) is None
    bad = tmp_path / "hashes"
    bad.write_text("# ok\nmy-secret-token-pasted-by-mistake\n")
    settings = make_settings(tmp_path / "store", auth_token_hashes_file=bad)
    with (
        pytest.raises(AccessConfigError, match="line 2: expected a SHA-256") as e,
        running_server(settings, load=False),
    ):
        pass
    assert "my-secret" not in str(e.value)


# -- artifacts never execute code --------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_a_malicious_pickle_planted_in_the_store_is_refused_without_running(
    built_store: tuple[Path, dict], tmp_path: Path
) -> None:
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))  # the payload is live
    assert control.exists()
    marker = tmp_path / "pwned"
    root = copy_store(built_store[0], tmp_path / "store")
    store = ArtifactStore(root)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def plant_pickle(path: Path) -> None:
        (path / WEIGHTS).write_bytes(pickle.dumps({"weights": _Payload(marker)}))
        write_signed_manifest(path, json.loads((path / MANIFEST).read_text()))

    with (
        running_server(make_settings(root, poll_interval_s=0.05)) as server,
        Client(f"127.0.0.1:{server.port}") as client,
    ):
        bad = plant_version(store, "alpha", scratch, plant_pickle)
        wait_for(lambda: load_failures(server.metrics_port, "alpha") == 1, what="refusal")
        assert "safetensors" in server.registry.bad_versions()[("alpha", bad)]
        assert client.score("alpha", X).model_version == "000002"
    assert not marker.exists()


# -- limits --------------------------------------------------------------------------------------
def test_limits_have_safe_defaults() -> None:
    s = ServiceSettings()
    assert s.max_message_bytes <= 64 * 2**20
    assert s.max_points_per_call <= 100_000
    assert s.max_concurrent_streams <= s.thread_pool_size
    assert s.max_concurrent_streams_per_connection <= 1000
    assert s.queue_limit <= 1_000_000
    assert (s.auth_health_open, s.auth_reflection_open) == (True, False)
    assert s.drain_delay_s < s.grace_period_s


def test_concurrent_streams_per_connection_is_enforced(built_store: tuple[Path, dict]) -> None:
    settings = make_settings(built_store[0], max_concurrent_streams_per_connection=2)
    release = threading.Event()
    with running_server(settings) as server, Client(f"127.0.0.1:{server.port}") as client:

        def held() -> Iterator[np.ndarray]:
            yield X
            release.wait(3)

        streams = [client.score_stream("alpha", held()) for _ in range(2)]
        for s in streams:
            assert next(s).model_version == "000002"  # two streams open on this connection
        with pytest.raises(DensityWatchError) as e:
            client.score("alpha", X, timeout=0.5)  # a third waits for a free slot
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with Client(f"127.0.0.1:{server.port}") as other:  # another connection is not held up
            assert len(other.score("alpha", X).log_prob) == 2
        release.set()
        for s in streams:
            assert list(s) == []
        # The slots come back. The client may see a stream end before the server has counted
        # it closed; a call in that window is refused (RST_STREAM REFUSED_STREAM, seen as
        # UNAVAILABLE), which HTTP/2 says to retry. Only that status is retried here.
        wait_for(lambda: _scores_or_refused(client), timeout=5, what="a stream slot back")


def _scores_or_refused(client: Client) -> bool:
    try:
        return len(client.score("alpha", X, timeout=2).log_prob) == 2
    except DensityWatchError as e:
        if e.code != grpc.StatusCode.UNAVAILABLE:
            raise
        return False


# -- what open probes reveal -----------------------------------------------------------------
STREAM_HEALTH = "densitywatch.v1.DensityWatch/alpha"
NO_STREAM_HEALTH = "densitywatch.v1.DensityWatch/nosuch"


def _health_of(
    port: int, service: str, metadata: tuple[tuple[str, str], ...] | None = None
) -> tuple[grpc.StatusCode, int, int]:
    """(Check's status code, Check's serving status, Watch's first serving status)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            code, status = grpc.StatusCode.OK, stub.Check(request, timeout=5, metadata=metadata)
        except grpc.RpcError as e:
            code, status = e.code(), health_pb2.HealthCheckResponse()
        watch = stub.Watch(request, timeout=5, metadata=metadata)
        first = next(watch).status
        watch.cancel()
    return code, status.status, first


def test_per_stream_health_needs_a_token_unless_opened(built_store: tuple[Path, dict]) -> None:
    unknown = (
        grpc.StatusCode.NOT_FOUND,
        health_pb2.HealthCheckResponse.UNKNOWN,
        health_pb2.HealthCheckResponse.SERVICE_UNKNOWN,
    )
    serving = (
        grpc.StatusCode.OK,
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.SERVING,
    )
    good = (("authorization", f"Bearer {TOKENS[0]}"),)
    with running_server(make_settings(built_store[0], auth_tokens=TOKENS)) as server:
        # Without a token a served stream looks exactly like one that does not exist.
        assert _health_of(server.port, STREAM_HEALTH) == unknown
        assert _health_of(server.port, NO_STREAM_HEALTH) == unknown
        assert _health_of(server.port, STREAM_HEALTH, good) == serving
        assert _health_of(server.port, "") == serving  # the overall probe stays open
        assert _health_of(server.port, "densitywatch.v1.DensityWatch") == serving
    settings = make_settings(built_store[0], auth_tokens=TOKENS, auth_stream_health_open=True)
    with running_server(settings) as server:
        assert _health_of(server.port, STREAM_HEALTH) == serving
    with running_server(make_settings(built_store[0])) as server:  # no tokens: all open
        assert _health_of(server.port, STREAM_HEALTH) == serving


def _reflect(
    channel: grpc.Channel, version: str, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    # grpc.reflection.v1 and v1alpha messages are the same on the wire.
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        reflection_pb2.ServerReflectionRequest.SerializeToString,
        reflection_pb2.ServerReflectionResponse.FromString,
    )
    return next(iter(call(iter([request]), timeout=5)))


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_serves_v1_and_v1alpha(built_store: tuple[Path, dict], version: str) -> None:
    from google.protobuf import descriptor_pb2

    with (
        running_server(make_settings(built_store[0])) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        listed = _reflect(
            channel, version, reflection_pb2.ServerReflectionRequest(list_services="")
        )
        names = {s.name for s in listed.list_services_response.service}
        assert {
            "densitywatch.v1.DensityWatch",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names
        for symbol in sorted(names):  # grpcurl describes each listed service this way
            found = _reflect(
                channel,
                version,
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol),
            )
            files = found.file_descriptor_response.file_descriptor_proto
            assert files, symbol
            protos = [descriptor_pb2.FileDescriptorProto.FromString(f) for f in files]
            package, _, service = symbol.rpartition(".")
            assert any(
                p.package == package and service in {s.name for s in p.service} for p in protos
            )
