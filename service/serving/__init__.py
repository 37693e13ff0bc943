"""Serving a registered model: the loaded model and its cache, resolving a reference to a version, the
dynamic batcher, the lean route class for hot endpoints and the API process's settings for inference.
``/predict``, ``/forecast`` and the Open Inference Protocol (HTTP and gRPC) are adapters on top; none of
them imports another."""
