"""The engine: how a prompt becomes steered tokens.

The prompt arrives as token ids with the positions to steer (rendered and located by
:mod:`directer.text`). ``continuous`` is the engine behind every request: its sequences
(``sequence``) own slots of a ``slot_cache``; ``decode_rows`` says what a decode forward carries and
each forward is packed (``packed_attention``: copy-free key scaling for trial and probe rows;
``attention_bias``: biased slots for the attention-bias baselines; ``prefill``: the inputs of a
prefill), routed to the model's attention by ``attention``; multi-row linears take the CPU's fast
orientation (``row_matmul``) and ``cost_model`` tells extra rows' price. ``readback`` computes a
forward's decisions' operands and reads them back at once, the draws of ``sampling`` among them.
``ranking`` records what the layer ranking observes; ``reference`` is the released code's sequential
decoding (reference mode, and the oracle of the tests). ``engine_options`` holds the engine's options,
``requests`` what it takes and gives back.

The engine imports the policies, never the other way round: a policy only describes the trials it
wants (:mod:`directer.methods.trial`). Nothing here imports evaluation, serving, the view or the CLI.
The public names are re-exported by :mod:`directer`.
"""
