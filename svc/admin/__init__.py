"""The gRPC admin API: servicer, server, protobuf <-> JSON document conversion, and the
code generated from proto/ (in `generated/`, written by `make proto`, never edited)."""
