"""Server reflection under both names clients ask for: `grpc.reflection.v1` (current grpcurl
and gRPC tools try it first) and `grpc.reflection.v1alpha` (older ones).

grpcio-reflection (checked up to 1.85) ships only v1alpha. The v1 protocol is the same
messages under another package, so one servicer answers both: its v1alpha messages are what
a v1 client reads on the wire. It serves descriptors from a pool of its own, holding the
served files and a v1 copy of the reflection file, so every listed service can be described
and the process's default pool is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
SERVICES = (V1_SERVICE, V1ALPHA_SERVICE)
METHOD = "ServerReflectionInfo"
_V1ALPHA_PACKAGE = reflection_pb2.DESCRIPTOR.package
_V1_PACKAGE = V1_SERVICE.rpartition(".")[0]
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def method_paths() -> list[str]:
    return [f"/{service}/{METHOD}" for service in SERVICES]


def enable_reflection(
    server: grpc.Server, files: Iterable[FileDescriptor], services: Iterable[str]
) -> None:
    """Serve reflection (v1 and v1alpha) over `services` (full names) defined in `files`."""
    servicer = reflection.ReflectionServicer([*services, *SERVICES], pool=_pool(files))
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(name, {METHOD: handler}) for name in SERVICES]
    )


def _pool(files: Iterable[FileDescriptor]) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:  # a file's dependencies must be there first
            add(dependency)
        pool.AddSerializedFile(_proto(file).SerializeToString())
        added.add(file.name)

    for file in [*files, reflection_pb2.DESCRIPTOR]:
        add(file)
    pool.AddSerializedFile(_v1_reflection_file().SerializeToString())
    return pool


def _proto(file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def _v1_reflection_file() -> descriptor_pb2.FileDescriptorProto:
    """The v1alpha reflection file renamed to v1 (the messages are the same)."""
    proto = _proto(reflection_pb2.DESCRIPTOR)
    proto.name, proto.package = _V1_FILE, _V1_PACKAGE
    proto.ClearField("options")  # v1alpha's are deprecated=true and its language packages
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name.removeprefix(old)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    return proto
