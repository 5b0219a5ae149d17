"""The model server: the TF Serving gRPC API over TensorFlow or OpenVINO, with batching."""
