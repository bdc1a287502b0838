"""C++ code generation for .proto files with Debian's protoc and gRPC plugin.

Bazel 4's native proto rules need @com_google_protobuf, which cannot be
fetched offline, so this macro runs /usr/bin/protoc directly.
"""

def strait_cc_proto(name, srcs, deps = [], grpc = False, visibility = None):
    """Generates <name>, a cc_library for `srcs` (and their gRPC stubs).

    Args:
      name: name of the cc_library.
      srcs: .proto files in this package.
      deps: other strait_cc_proto targets that these protos import.
      grpc: also generate gRPC service stubs.
      visibility: visibility of the cc_library.
    """
    pkg = native.package_name()
    stems = [s[:-len(".proto")] for s in srcs]
    hdrs = [s + ".pb.h" for s in stems]
    cc_srcs = [s + ".pb.cc" for s in stems]
    if grpc:
        hdrs += [s + ".grpc.pb.h" for s in stems]
        cc_srcs += [s + ".grpc.pb.cc" for s in stems]
    cmd = "/usr/bin/protoc -I. -I/usr/include --cpp_out=$(GENDIR)"
    if grpc:
        cmd += " --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin --grpc_out=$(GENDIR)"
    cmd += " " + " ".join([pkg + "/" + s for s in srcs])
    native.genrule(
        name = name + "_gen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = hdrs + cc_srcs,
        cmd = cmd,
    )
    native.filegroup(
        name = name + "_srcs",
        srcs = srcs + [d + "_srcs" for d in deps],
        visibility = visibility,
    )
    native.cc_library(
        name = name,
        srcs = cc_srcs,
        hdrs = hdrs,
        deps = deps + ["//bazel:protobuf"] + (["//bazel:grpc"] if grpc else []),
        visibility = visibility,
    )
