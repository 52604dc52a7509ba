"""Container health check: asks the service's grpc.health.v1 endpoint whether it is SERVING.

Used by the Dockerfile's HEALTHCHECK (Kubernetes uses its native gRPC probes instead).
Exit code 0 when SERVING, 1 otherwise (not serving, unreachable, or timed out).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="service host")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("DENSITYWATCH_GRPC_PORT", "50051")),
        help="gRPC port (default: $DENSITYWATCH_GRPC_PORT or 50051)",
    )
    parser.add_argument("--service", default="", help="service name; '' is the whole server")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    return parser.parse_args(argv)


def check(host: str, port: int, service: str, timeout: float) -> tuple[bool, str]:
    """Return (healthy, message) for one health Check call."""
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as e:
            return False, f"health check failed: {e.code().name}: {e.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    healthy, message = check(args.host, args.port, args.service, args.timeout)
    print(message, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
