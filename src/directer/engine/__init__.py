"""The engine: how a prompt becomes steered tokens.

``prompts`` renders the prompt through the chat template and ``spans`` (with ``token_offsets``) maps
each instruction to token positions; ``plan`` describes the rows of one forward pass, which the two
mechanisms carry out: ``key_scaling`` (a read-only view of the KV cache that scales instruction keys)
and ``attention_bias`` (additive attention-logit biases through a wrapped attention function), both
mapping columns of sliding-window layers with ``sliding_window``; ``ranking`` is the per-prompt layer
sensitivity analysis; ``decoding`` the synchronised loop that runs a policy of :mod:`directer.methods`
(reference mode, attention-bias methods). ``continuous`` is the engine behind every other path: its
sequences (``sequence``) own slots of a ``slot_cache``, each forward is packed (``packed_attention``,
``prefill``), multi-row linears take the CPU's fast orientation (``row_matmul``) and ``cost_model``
tells extra rows' price. ``engine_options`` holds its options, ``requests`` what both loops take and
give back, ``sampling`` the per-request draws (transformers' warpers, counter-based uniforms).

The engine imports the policies, never the other way round: a policy only describes the trials it
wants (:mod:`directer.methods.trial`). Nothing here imports evaluation, serving, the view or the CLI.
The public names are re-exported by :mod:`directer`; modules are imported one by one, so that the
torch-free ones (``prompts``, ``spans``) stay light.
"""
