"""Messages of the Open Inference Protocol gRPC binding, generated from the .proto here."""
