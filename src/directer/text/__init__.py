"""Text processing before the engine, torch-free: ``prompts`` renders the prompt through the chat template
(instructions appended where missing), ``spans`` maps each instruction to token positions (paper and
reference mode) and ``token_offsets`` gives the character offsets of tokens it relies on."""
