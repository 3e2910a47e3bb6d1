"""Loading with a device map (accelerate's big-model placement, as transformers' ``device_map=``): checked
before any weights load, and a steered model spread by it decodes exactly as the plain load."""

from __future__ import annotations

import pytest
import torch

from directer import Directer
from directer.errors import DirecterError, UsageError
from directer.models.loading import DEVICE_MAPS, check_device_map, dtype_name, load_model

from bundled_tokenizer import load_bundled_tokenizer, tiny_chat_model

PROMPT = "Write a short poem about the sea. Do not use any commas."
INSTRUCTION = "Do not use any commas."


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-chat")
    tokenizer = load_bundled_tokenizer()
    tiny_chat_model(tokenizer, layers=3).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_strategies_and_dicts_are_accepted():
    for name in DEVICE_MAPS:
        assert check_device_map(name) == name
    mapping = {"model.embed_tokens": "cpu", "model.layers.0": "disk", "lm_head": "cpu"}
    assert check_device_map(mapping) is mapping
    assert check_device_map(None) is None


@pytest.mark.parametrize("bad, words", [
    ("everywhere", "unknown device map 'everywhere'"),
    ({}, "invalid device map"),
    ({"model.layers.0": "gpu7"}, "invalid device 'gpu7' for 'model.layers.0'"),
    ({"model.layers.0": True}, "invalid device True"),
    ({"model.layers.0": [0]}, "invalid device [0]"),
    ({3: "cpu"}, "module names are strings"),
])
def test_a_bad_device_map_is_one_clear_error(bad, words):
    with pytest.raises(UsageError) as err:
        check_device_map(bad)
    assert words in str(err.value)


def test_a_device_and_a_map_exclude_each_other():
    with pytest.raises(UsageError, match="a device or a device map, not both"):
        check_device_map("auto", device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_map_onto_cuda_without_cuda_fails_before_loading():
    with pytest.raises(DirecterError, match="CUDA is not available"):
        check_device_map({"model.layers.0": 0})


def test_placement_options_need_a_map(folder):
    with pytest.raises(UsageError, match="give a device_map too"):
        load_model(str(folder), device="cpu", max_memory={"cpu": "1GiB"})


def test_auto_dtype_by_name():
    assert dtype_name("float32") == "float32" and dtype_name("bf16") == "bf16"  # as given (run directories)
    assert dtype_name("auto", device="cpu") == "float32"
    assert dtype_name("auto", device_map={"model": "cpu"}) == "float32"


@pytest.mark.parametrize("method", ["directer", "none", "static", "pasta"])
def test_a_model_spread_by_a_map_decodes_as_the_plain_load(folder, tmp_path, method):
    plain = Directer.from_pretrained(str(folder), device="cpu", max_new_tokens=12)
    # One layer offloaded to disk: accelerate's hooks bring its weights in at every forward and move
    # activations between modules, the code path of a map over several GPUs.
    mapping = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "cpu",
               "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    spread = Directer.from_pretrained(str(folder), device_map=mapping, offload_folder=str(tmp_path / "offload"),
                                      max_new_tokens=12)
    assert spread.model.hf_device_map == mapping
    a = plain.generate(PROMPT, INSTRUCTION, method=method)
    b = spread.generate(PROMPT, INSTRUCTION, method=method)
    assert b.token_ids == a.token_ids and b.ranking == a.ranking
    batch = [PROMPT, "Say hello. Use only lowercase letters."], [INSTRUCTION, "Use only lowercase letters."]
    assert ([r.token_ids for r in spread.generate(*batch, batch_size=2, method=method)]
            == [r.token_ids for r in plain.generate(*batch, batch_size=2, method=method)])


def test_the_auto_strategy_loads_on_this_machine(folder):
    spread = Directer.from_pretrained(str(folder), device_map="auto", max_new_tokens=8)
    plain = Directer.from_pretrained(str(folder), device="cpu" if not torch.cuda.is_available() else "cuda",
                                     max_new_tokens=8)
    assert spread.generate(PROMPT, INSTRUCTION).token_ids == plain.generate(PROMPT, INSTRUCTION).token_ids


def test_float16_with_a_large_alpha_under_a_map_is_refused_not_recast(folder, tmp_path):
    # A map onto one device dispatches nothing (and is recast as a plain load is); one that offloads is not.
    mapping = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "cpu",
               "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    with pytest.raises(UsageError, match="load it with dtype bfloat16 or float32"):
        Directer.from_pretrained(str(folder), device_map=mapping, offload_folder=str(tmp_path), dtype="float16")
    spread = Directer.from_pretrained(str(folder), device_map=mapping, offload_folder=str(tmp_path), dtype="float16",
                                      method="none", max_new_tokens=4)
    assert spread.generate(PROMPT, INSTRUCTION).token_ids  # unsteered: nothing to overflow
