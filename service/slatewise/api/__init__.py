"""gRPC servicers: one module per service, protobuf in and out, nothing else."""
