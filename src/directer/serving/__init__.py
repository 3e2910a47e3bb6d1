"""Serving: the OpenAI-compatible HTTP server (``server``) and the worker thread that owns the model and
decodes queued requests in batches (``scheduler``)."""
