"""Generated protobuf and gRPC modules of the contextd.v1 API (see gen.sh); do not edit them."""
