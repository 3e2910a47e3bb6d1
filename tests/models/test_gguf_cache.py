"""The GGUF conversion cache (models/gguf_cache.py): where it lives, markers, reuse, damage and rebuild,
concurrent processes and threads, and the first and second load of the bundled model.

The cache tests substitute a tiny random model for the 20 s GGUF conversion; the tests marked
`slow` use the real bundled SmolLM2-135M GGUF.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from directer.models import gguf_cache
from directer.models import loading as models
from directer.errors import DirecterError

from fake_models import FakeConverter, logits, one_line, tiny_model, tiny_tokenizer

# Run in a child process: convert via the rendezvous fake, then print the logits' sum.
CHILD_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import fake_models
from directer.models import gguf_cache
model, _ = gguf_cache._cached_conversion(Path(sys.argv[1]), fake_models.rendezvous_convert)
print(repr(float(fake_models.logits(model).double().sum())))
"""


def cache_entries(root: Path) -> list[str]:
    folder = root / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- resolve_dtype


def test_cache_root_prefers_directer_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DIRECTER_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_cache.cache_root() == tmp_path / "explicit"


def test_cache_root_uses_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("DIRECTER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_cache.cache_root() == tmp_path / "xdg" / "directer"


def test_cache_root_defaults_to_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DIRECTER_CACHE_DIR", "")  # empty counts as unset
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert gguf_cache.cache_root() == tmp_path / ".cache" / "directer"


def test_cache_root_expands_tilde(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DIRECTER_CACHE_DIR", "~/dc")
    assert gguf_cache.cache_root() == tmp_path / "dc"


# --------------------------------------------------------------------------- model lookup


def test_cache_build_writes_marker_and_note(cache_dir, fake_gguf, capsys):
    convert = FakeConverter()
    model, tokenizer = gguf_cache._cached_conversion(fake_gguf, convert)
    assert convert.calls == 1
    assert "converting Tiny-Model.Q4_1.gguf once" in capsys.readouterr().err
    (entry,) = cache_entries(cache_dir)  # no temp folders left behind
    assert entry.startswith("Tiny-Model.Q4_1-")
    folder = cache_dir / "models" / entry
    marker = json.loads((folder / gguf_cache.CACHE_MARKER).read_text())
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
    (path.parent / gguf_cache.CACHE_MARKER).unlink()


def _garble_marker(path: Path) -> None:
    (path.parent / gguf_cache.CACHE_MARKER).write_text("{not json")


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
        "PYTHONPATH": os.pathsep.join([str(Path(gguf_cache.__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-c", CHILD_SCRIPT, str(fake_gguf), str(Path(__file__).parents[1])]
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
    marker = json.loads((root / "models" / entry / gguf_cache.CACHE_MARKER).read_text())
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


def test_two_installations_of_one_file_share_a_conversion(cache_dir, fake_gguf, tmp_path):
    """The cache is keyed by the file's content: a second virtual environment holding the same GGUF at
    another path reuses the first one's conversion; a file with other content gets its own."""
    other = tmp_path / "venv2" / "site-packages" / fake_gguf.name
    other.parent.mkdir(parents=True)
    shutil.copyfile(fake_gguf, other)
    convert = FakeConverter()
    gguf_cache._cached_conversion(fake_gguf, convert)
    gguf_cache._cached_conversion(other, convert)
    assert convert.calls == 1 and len(cache_entries(cache_dir)) == 1
    changed = tmp_path / "changed" / fake_gguf.name
    changed.parent.mkdir()
    changed.write_bytes(b"GGUF other content")
    gguf_cache._cached_conversion(changed, convert)
    assert convert.calls == 2 and len(cache_entries(cache_dir)) == 2
    digests = json.loads((cache_dir / gguf_cache.DIGESTS_FILE).read_text())
    assert len(digests) == 3 and len(set(digests.values())) == 2  # each file hashed once, remembered
