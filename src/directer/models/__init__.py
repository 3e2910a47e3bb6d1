"""Models: where a model comes from (``locate``: the bundled SmolLM2 GGUF, ``.gguf`` files, local
folders, Hub ids; torch-free), loading it and checking that its architecture can be steered
(``loading``), and the on-disk cache of converted GGUF models (``gguf_cache``: a float32 safetensors
folder under ``$DIRECTER_CACHE_DIR``, default ``~/.cache/directer``).

The entry point is :func:`directer.models.loading.load_model` (``directer.load_model``).
"""
