"""Locating instruction spans (text/spans.py) on the real bundled SmolLM2 tokenizer (ChatML template)."""

from __future__ import annotations

import pytest

from directer.text import spans as spans_module
from directer.text import token_offsets
from directer.errors import SpanNotFoundError, UsageError
from directer.text.spans import (PreparedPrompt, TokenSpan, char_span_to_tokens, find_subsequence,
                                   prepare_prompt)

from bundled_tokenizer import Wrapped, bundled_tokenizer

TASK = "Write a poem about the sea."
NO_COMMAS = "Do not use any commas."
SHORT = "Keep it under 50 words."


@pytest.fixture(scope="module")
def tok():
    return bundled_tokenizer()


def decoded(tok, prepared: PreparedPrompt, span: TokenSpan) -> str:
    return tok.decode(prepared.input_ids[span.start : span.end])


def template_ids(tok, messages) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def user_region(prepared: PreparedPrompt) -> tuple[int, int]:
    """Character range of the last user content in the rendered text."""
    content = [m for m in prepared.messages if m["role"] == "user"][-1]["content"]
    start = prepared.text.rindex("<|im_start|>user\n" + content) + len("<|im_start|>user\n")
    return start, start + len(content)


def assert_one_line(excinfo) -> None:
    assert "\n" not in str(excinfo.value)


# --------------------------------------------------------------------------- #
# Tokenizer wrappers used to exercise the fallback path
# --------------------------------------------------------------------------- #


class BrokenDecode(Wrapped):
    """Broken offsets and a decoder that returns nothing: no way to verify a span."""

    def decode(self, *args, **kwargs):
        return ""


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def test_find_subsequence():
    assert find_subsequence([1, 2, 3, 2, 3], [2, 3]) == 1
    assert find_subsequence([1, 2, 3], [3]) == 2
    assert find_subsequence([1, 2, 3], [3, 4]) == -1
    assert find_subsequence([1, 2], [1, 2, 3]) == -1
    assert find_subsequence([1, 2], []) == -1
    assert find_subsequence((5, 5, 5), (5, 5)) == 0


def test_rendered_ids_equal_apply_chat_template_ids(tok):
    prepared = prepare_prompt(tok, TASK, [NO_COMMAS], system="Be helpful.")
    assert prepared.input_ids == template_ids(tok, prepared.messages)
    prepared = prepare_prompt(tok, TASK, [NO_COMMAS])
    assert prepared.input_ids == template_ids(tok, prepared.messages)
    assert prepared.text.endswith("<|im_start|>assistant\n")


# --------------------------------------------------------------------------- #
# Paper mode
# --------------------------------------------------------------------------- #


def test_appended_instruction_layout_and_span(tok):
    prepared = prepare_prompt(tok, TASK, [NO_COMMAS])
    assert prepared.messages == [{"role": "user", "content": TASK + "\n\n" + NO_COMMAS}]
    assert "<|im_start|>user\n" + TASK + "\n\n" + NO_COMMAS + "<|im_end|>" in prepared.text
    (span,) = prepared.spans
    assert span.text == NO_COMMAS
    assert prepared.text[span.char_start : span.char_end] == NO_COMMAS
    assert decoded(tok, prepared, span) == NO_COMMAS  # tokens align exactly here
    # "\n\n" is two tokens; the span starts right after them.
    assert tok.decode(prepared.input_ids[span.start - 2 : span.start]) == "\n\n"


def test_several_missing_instructions_are_joined_by_newlines(tok):
    prepared = prepare_prompt(tok, TASK, [NO_COMMAS, SHORT])
    assert prepared.messages[-1]["content"] == TASK + "\n\n" + NO_COMMAS + "\n" + SHORT
    first, second = prepared.spans
    assert decoded(tok, prepared, first) == NO_COMMAS
    assert decoded(tok, prepared, second).strip() == SHORT
    assert first.end <= second.start


def test_in_place_instruction_is_not_appended(tok):
    prompt = f"{NO_COMMAS} {TASK}"
    prepared = prepare_prompt(tok, prompt, [NO_COMMAS])
    assert prepared.messages[-1]["content"] == prompt
    (span,) = prepared.spans
    assert span.char_start == user_region(prepared)[0]
    assert decoded(tok, prepared, span) == NO_COMMAS


def test_several_spans_keep_the_given_order(tok):
    prompt = f"{TASK} {SHORT}"
    prepared = prepare_prompt(tok, prompt, [NO_COMMAS, SHORT])
    assert prepared.messages[-1]["content"] == prompt + "\n\n" + NO_COMMAS  # only the missing one appended
    commas, short = prepared.spans
    assert (commas.text, short.text) == (NO_COMMAS, SHORT)
    assert short.end <= commas.start  # in-place span comes first in the text, but second in the list
    assert decoded(tok, prepared, short).strip() == SHORT
    assert decoded(tok, prepared, commas) == NO_COMMAS


def test_duplicate_instruction_is_appended_once(tok):
    prepared = prepare_prompt(tok, TASK, [NO_COMMAS, NO_COMMAS])
    assert prepared.messages[-1]["content"].count(NO_COMMAS) == 1
    assert prepared.spans[0] == prepared.spans[1]


def test_repeated_text_occurrence_choice(tok):
    prompt = "Be brief. Tell me about cats. Be brief. Tell me about dogs. Be brief."
    positions = [i for i in range(len(prompt)) if prompt.startswith("Be brief.", i)]
    starts = {}
    for occ in (0, 1, 2, -1, -3):
        prepared = prepare_prompt(tok, prompt, ["Be brief."], occurrence=occ)
        (span,) = prepared.spans
        region_start = user_region(prepared)[0]
        starts[occ] = span.char_start - region_start
        assert decoded(tok, prepared, span).strip() == "Be brief."
    assert starts[0] == positions[0] and starts[1] == positions[1] and starts[2] == positions[2]
    assert starts[-1] == positions[2] and starts[-3] == positions[0]
    with pytest.raises(UsageError, match="occurs 3 time") as excinfo:
        prepare_prompt(tok, prompt, ["Be brief."], occurrence=3)
    assert_one_line(excinfo)
    with pytest.raises(UsageError, match="occurs 3 time"):
        prepare_prompt(tok, prompt, ["Be brief."], occurrence=-4)


def test_occurrence_per_instruction(tok):
    prompt = "Be brief. Tell me about cats. Be brief."
    prepared = prepare_prompt(tok, prompt, ["Be brief.", "cats"], occurrence=[1, 0])
    brief, cats = prepared.spans
    assert brief.char_start > cats.char_start
    with pytest.raises(UsageError, match="one per instruction"):
        prepare_prompt(tok, prompt, ["Be brief.", "cats"], occurrence=[1])
    with pytest.raises(UsageError):
        prepare_prompt(tok, prompt, ["Be brief."], occurrence=True)


def test_appended_instruction_with_nonzero_occurrence_is_out_of_range(tok):
    with pytest.raises(UsageError, match="occurs 1 time"):
        prepare_prompt(tok, TASK, [NO_COMMAS], occurrence=1)


def test_bpe_merged_edges_are_included(tok):
    prompt = "Write a poem without any commas."
    prepared = prepare_prompt(tok, prompt, ["commas", "out any"])
    commas, out_any = prepared.spans
    # " commas" is one token whose range starts at the space before the instruction.
    assert commas.end - commas.start == 1
    assert decoded(tok, prepared, commas) == " commas"
    # "out" sits inside the token " without": the whole token is steered.
    assert decoded(tok, prepared, out_any) == " without any"
    for span in prepared.spans:
        assert span.text in decoded(tok, prepared, span)
        assert prepared.text[span.char_start : span.char_end] == span.text


def test_instruction_splitting_a_multibyte_character(tok):
    # "🦜" is three byte-level tokens; all of them belong to the span.
    prepared = prepare_prompt(tok, "Use 🦜 emoji in the reply.", ["🦜 emoji"])
    (span,) = prepared.spans
    assert decoded(tok, prepared, span) == " 🦜 emoji"
    assert span.end - span.start == 5


def test_missing_instruction_without_append_is_an_error(tok):
    with pytest.raises(SpanNotFoundError, match="Do not use any commas") as excinfo:
        prepare_prompt(tok, TASK, [NO_COMMAS], append_missing=False)
    assert "append_missing=True" in str(excinfo.value)
    assert_one_line(excinfo)
    long_instruction = "x" * 200
    with pytest.raises(SpanNotFoundError) as excinfo:
        prepare_prompt(tok, TASK, [long_instruction], append_missing=False)
    assert "x" * 70 not in str(excinfo.value)  # truncated


def test_present_instruction_without_append_is_fine(tok):
    prepared = prepare_prompt(tok, f"{TASK} {NO_COMMAS}", [NO_COMMAS], append_missing=False)
    assert decoded(tok, prepared, prepared.spans[0]).strip() == NO_COMMAS


# Choice documented in the module: user contents are searched first, other messages only
# when no user message holds the instruction; occurrence counts within that scope.


def test_user_content_wins_over_system_message(tok):
    instruction = "Answer in French."
    prepared = prepare_prompt(tok, f"Tell me about cats. {instruction}", [instruction], system=instruction)
    (span,) = prepared.spans
    user_start, user_end = user_region(prepared)
    assert user_start <= span.char_start < span.char_end <= user_end
    # Only one occurrence counts (the user's), even though the text appears twice.
    with pytest.raises(UsageError, match="occurs 1 time"):
        prepare_prompt(tok, f"Tell me about cats. {instruction}", [instruction], system=instruction, occurrence=1)


def test_instruction_only_in_system_message_is_steered_there(tok):
    instruction = "Answer in French."
    prepared = prepare_prompt(tok, "Tell me about cats.", [instruction], system=f"You are terse. {instruction}")
    assert prepared.messages[-1]["content"] == "Tell me about cats."  # not appended
    (span,) = prepared.spans
    system_start = prepared.text.index("You are terse.")
    assert span.char_start == system_start + len("You are terse. ")
    assert decoded(tok, prepared, span).strip() == instruction


def test_template_default_system_text_is_not_matched(tok):
    # The ChatML template injects "You are a helpful AI assistant ..." itself: that is
    # scaffolding, not a message, so the instruction is appended to the user message.
    instruction = "You are a helpful AI assistant"
    prepared = prepare_prompt(tok, TASK, [instruction])
    assert prepared.messages[-1]["content"] == TASK + "\n\n" + instruction
    (span,) = prepared.spans
    assert span.char_start >= user_region(prepared)[0]


def test_never_matches_template_scaffolding(tok):
    # The content "user" also appears in "<|im_start|>user"; only the content counts.
    prepared = prepare_prompt(tok, "user", ["user"])
    (span,) = prepared.spans
    assert span.char_start == prepared.text.index("<|im_start|>user\nuser") + len("<|im_start|>user\n")
    with pytest.raises(UsageError, match="occurs 1 time"):
        prepare_prompt(tok, "user", ["user"], occurrence=1)


def test_message_list_input(tok):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": TASK},
    ]
    original = [dict(m) for m in messages]
    prepared = prepare_prompt(tok, messages, [NO_COMMAS])
    assert messages == original  # the caller's messages are not mutated
    assert prepared.messages[:3] == original[:3]
    assert prepared.messages[3]["content"] == TASK + "\n\n" + NO_COMMAS
    assert prepared.input_ids == template_ids(tok, prepared.messages)
    assert decoded(tok, prepared, prepared.spans[0]) == NO_COMMAS
    with pytest.raises(UsageError, match="system given twice"):
        prepare_prompt(tok, messages, [NO_COMMAS], system="Again.")
    with pytest.raises(UsageError, match="no user message"):
        prepare_prompt(tok, [{"role": "system", "content": "You are terse."}], [NO_COMMAS])


def test_trimming_template_uses_stripped_content_regions(tok):
    # A template that trims contents: exact splicing fails, the stripped variant succeeds.
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    wrapped = Wrapped(tok, "none", chat_template=template)
    prepared = prepare_prompt(wrapped, f"  user {NO_COMMAS}  ", [NO_COMMAS, "user"])
    commas, user = prepared.spans
    assert decoded(tok, prepared, commas).strip() == NO_COMMAS
    assert user.char_start == prepared.text.index("\nuser Do") + 1


# --------------------------------------------------------------------------- #
# Fallback for broken offset mappings
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("how", ["slow", "shifted", "shuffled", "sane_but_wrong"])
def test_fallback_gives_the_same_spans(tok, how, monkeypatch):
    prompt = "Write a poem without any commas. Use 🦜 emoji."
    instructions = ["commas", "out any", NO_COMMAS, "🦜 emoji"]
    expected = prepare_prompt(tok, prompt, instructions)

    calls = []
    real = token_offsets.decoded_offsets
    monkeypatch.setattr(spans_module, "decoded_offsets", lambda *a: calls.append(1) or real(*a))
    got = prepare_prompt(Wrapped(tok, how), prompt, instructions)
    assert calls, "the decoding fallback was not used"
    assert got.input_ids == expected.input_ids
    assert got.spans == expected.spans


def test_unverifiable_span_is_an_error(tok):
    with pytest.raises(SpanNotFoundError, match="commas") as excinfo:
        prepare_prompt(BrokenDecode(tok, "slow"), TASK, [NO_COMMAS])
    assert_one_line(excinfo)


def test_char_span_to_tokens(tok):
    text = "Write a poem without any commas."
    encoding = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    start = text.index("commas")
    expected = (5, 6)
    assert char_span_to_tokens(tok, text, ids, start, start + 6) == expected
    assert char_span_to_tokens(tok, text, ids, start, start + 6, offsets=offsets) == expected
    assert char_span_to_tokens(tok, text, ids, start, start + 6, offsets=offsets[::-1]) == expected
    assert char_span_to_tokens(Wrapped(tok, "slow"), text, ids, start, start + 6) == expected
    with pytest.raises(UsageError):
        char_span_to_tokens(tok, text, ids, 5, 5)


# --------------------------------------------------------------------------- #
# Reference mode
# --------------------------------------------------------------------------- #


def test_reference_span_is_paper_span_plus_one_token(tok):
    paper = prepare_prompt(tok, TASK, [NO_COMMAS])
    reference = prepare_prompt(tok, TASK, [NO_COMMAS], mode="reference")
    assert reference.text == paper.text and reference.input_ids == paper.input_ids
    (p,), (r,) = paper.spans, reference.spans
    assert (r.start, r.end) == (p.start, p.end + 1)
    assert r.char_start is None and r.char_end is None
    assert tok.decode(reference.input_ids[r.end - 1 : r.end]) == "<|im_end|>"


def test_reference_span_is_clipped_to_the_prompt(tok):
    prompt = f"{TASK} {NO_COMMAS}"
    reference = prepare_prompt(tok, prompt, [" " + NO_COMMAS], mode="reference", chat_template=False)
    (r,) = reference.spans
    assert r.end == len(reference.input_ids)


def test_reference_not_found_is_an_error(tok):
    # Alone, "commas" tokenizes as "comm"+"as", which never occurs inside " commas".
    with pytest.raises(SpanNotFoundError, match="commas") as excinfo:
        prepare_prompt(tok, "Write a poem without any commas.", ["commas"], mode="reference")
    assert "mode='paper'" in str(excinfo.value)
    assert_one_line(excinfo)
    # Paper mode finds it.
    assert prepare_prompt(tok, "Write a poem without any commas.", ["commas"]).spans


# --------------------------------------------------------------------------- #
# Plain text and argument errors
# --------------------------------------------------------------------------- #


def test_plain_text_without_chat_template(tok):
    prepared = prepare_prompt(tok, TASK, [NO_COMMAS], chat_template=False)
    assert prepared.messages is None
    assert prepared.text == TASK + "\n\n" + NO_COMMAS
    assert prepared.input_ids == tok(prepared.text)["input_ids"]
    (span,) = prepared.spans
    assert decoded(tok, prepared, span) == NO_COMMAS
    assert (span.char_start, span.char_end) == (len(TASK) + 2, len(prepared.text))


def test_tokenizer_without_template(tok):
    no_template = Wrapped(tok, "none", chat_template=None)
    with pytest.warns(UserWarning, match="no chat template: prompts are used as plain text"):
        prepared = prepare_prompt(no_template, TASK, [NO_COMMAS])  # chat_template=None: plain text
    assert prepared.messages is None and prepared.text == TASK + "\n\n" + NO_COMMAS
    with pytest.raises(UsageError, match="chat_template=False"):
        prepare_prompt(no_template, TASK, [NO_COMMAS], chat_template=True)
    # One rule for chat messages too (CLI, batch files, the server's chat endpoint): joined into plain text.
    chat = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": TASK}]
    with pytest.warns(UserWarning, match="chat messages joined"):
        joined = prepare_prompt(no_template, chat, [NO_COMMAS])
    assert joined.text == "Be nice.\n\n" + TASK + "\n\n" + NO_COMMAS
    with pytest.warns(UserWarning):
        assert prepare_prompt(no_template, TASK, [NO_COMMAS], system="Be nice.").text == joined.text


@pytest.mark.parametrize("prompt", ["", "   \n", [], [{"role": "user", "content": ""}]])
def test_empty_prompt_is_an_error(tok, prompt):
    with pytest.raises(UsageError, match="empty prompt") as excinfo:
        prepare_prompt(tok, prompt, [NO_COMMAS])
    assert_one_line(excinfo)


@pytest.mark.parametrize("instruction", ["", "  ", "\n\t"])
def test_empty_instruction_is_an_error(tok, instruction):
    with pytest.raises(UsageError, match="empty instruction") as excinfo:
        prepare_prompt(tok, TASK, [NO_COMMAS, instruction])
    assert_one_line(excinfo)


def test_bad_arguments(tok):
    with pytest.raises(UsageError, match="unknown mode"):
        prepare_prompt(tok, TASK, [NO_COMMAS], mode="magic")
    with pytest.raises(UsageError, match="non-text content"):
        prepare_prompt(tok, [{"role": "user", "content": [{"type": "text"}]}], [NO_COMMAS])
    with pytest.raises(UsageError, match="mapping"):
        prepare_prompt(tok, [{"content": "hi"}], [NO_COMMAS])
    with pytest.raises(UsageError, match="instruction strings"):
        prepare_prompt(tok, TASK, [3])


def test_single_string_instruction_is_one_instruction(tok):
    prepared = prepare_prompt(tok, TASK, NO_COMMAS)
    assert [s.text for s in prepared.spans] == [NO_COMMAS]


def test_no_instructions(tok):
    prepared = prepare_prompt(tok, TASK, [])
    assert prepared.spans == [] and prepared.messages[-1]["content"] == TASK


# --------------------------------------------------------------------------- #
# scope="system": the system message as the instruction span
# --------------------------------------------------------------------------- #

RULES = "Answer in French.\nNever use lists."
# A Gemma-style template: no system turn, the system text folded into the first user turn.
FOLDING = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\n\n' %}"
           "{% set rest = messages[1:] %}{% else %}{% set first = '' %}{% set rest = messages %}{% endif %}"
           "{% for m in rest %}<|im_start|>{{ m['role'] }}\n{% if loop.first %}{{ first }}{% endif %}"
           "{{ m['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n")


@pytest.mark.parametrize("template", ["own", "folding", "none"])
def test_the_system_message_is_the_span_whatever_the_template(tok, template):
    # The user repeats the first rule: the span is still the system message's text, as a whole.
    messages = [{"role": "system", "content": f"  {RULES}\n"}, {"role": "user", "content": "Answer in French. 2+2?"}]
    tokenizer = {"own": tok, "folding": Wrapped(tok, "none", chat_template=FOLDING), "none": tok}[template]
    prepared = prepare_prompt(tokenizer, messages, [], scope="system", chat_template=template != "none")
    [span] = prepared.spans
    assert span.text == RULES  # surrounding whitespace left out
    assert decoded(tok, prepared, span).strip() == RULES
    assert prepared.text.index(RULES) == span.char_start  # the system text, not the user's repetition
    assert prepared.text.index("2+2?") > span.char_end


def test_the_system_argument_is_the_span_and_equals_naming_its_text(tok):
    by_scope = prepare_prompt(tok, TASK, [], system=NO_COMMAS, scope="system")
    by_text = prepare_prompt(tok, TASK, [NO_COMMAS], system=NO_COMMAS)
    assert by_scope.input_ids == by_text.input_ids and by_scope.positions == by_text.positions
    assert by_scope.appended == []


def test_system_scope_without_a_system_message_is_one_clear_error(tok):
    with pytest.raises(UsageError, match="the prompt has none: give one") as excinfo:
        prepare_prompt(tok, [{"role": "user", "content": TASK}], [], scope="system")
    assert_one_line(excinfo)
    with pytest.raises(UsageError, match="the prompt has none"):
        prepare_prompt(tok, TASK, [], system="   ", scope="system")
    with pytest.raises(UsageError, match="pass no others"):
        prepare_prompt(tok, TASK, [NO_COMMAS], system=NO_COMMAS, scope="system")
    with pytest.raises(UsageError, match="unknown instruction scope"):
        prepare_prompt(tok, TASK, [NO_COMMAS], scope="roles")
