"""A bare gRPC echo server with the same message shapes as Score (the serving baseline):
same sync server, same thread pool (`densitywatch.service.executor.LifoThreadPoolExecutor`),
answers a one-point ScoreResponse without any work."""

from __future__ import annotations

import sys
import threading

import grpc

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.api.v1 import densitywatch_pb2_grpc as pb_grpc
from densitywatch.service.executor import LifoThreadPoolExecutor, for_grpc


class Echo(pb_grpc.DensityWatchServicer):
    def Score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreResponse:  # noqa: N802
        n = request.points.count
        return pb.ScoreResponse(
            request_id=request.request_id,
            stream=request.stream,
            model_version="000001",
            log_prob=[-1.0] * n,
            p_value=[0.5] * n,
            level=["normal"] * n,
        )


def main() -> None:
    port, threads = int(sys.argv[1]), int(sys.argv[2])
    server = grpc.server(for_grpc(LifoThreadPoolExecutor(max_workers=threads)))
    pb_grpc.add_DensityWatchServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
