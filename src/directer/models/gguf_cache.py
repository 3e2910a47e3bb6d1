"""The on-disk cache of converted GGUF files: conversion, cache layout, markers and repair.

GGUF files are dequantised once into a plain float32 Hugging Face folder kept in a cache,
because the conversion takes ~20 s while reloading the saved folder takes well under a second.
Processes share the cache safely: builds go to unique temp folders published by atomic rename,
and a folder whose marker or file sizes don't check out is discarded and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..errors import DirecterError

__all__ = ["CACHE_FORMAT", "CACHE_MARKER", "cache_root"]

CACHE_MARKER = "directer-cache.json"
DIGESTS_FILE = "digests.json"
# Bump when the cached folder layout changes, so old caches are rebuilt rather than misread.
CACHE_FORMAT = 2  # 2: folders keyed by the GGUF file's content (SHA-256), not its path
# A temporary build folder older than this belongs to a process that died mid-conversion.
_STALE_TMP_SECONDS = 24 * 3600

# transformers' from_pretrained temporarily swaps process-wide functions (e.g. it stubs out
# PreTrainedModel.tie_weights and restores "the original" afterwards), so two threads loading at
# once can leave them stubbed for good (seen: untied lm_head left on the meta device). Serialise
# every load, here and in models.
_LOAD_LOCK = threading.RLock()

T = TypeVar("T")
ModelAndTokenizer = tuple[Any, Any]


# --------------------------------------------------------------------------- helpers (models uses them too)


def _short(exc: BaseException, limit: int = 600) -> str:
    """An exception message whole, its lines joined into one (for one-line errors)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines) if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _note(message: str) -> None:
    print(f"directer: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Hide transformers' per-load progress bars for local loads (they would print on every run)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


# --------------------------------------------------------------------------- cache


def cache_root() -> Path:
    """Folder for directer's caches.

    $DIRECTER_CACHE_DIR if set, else $XDG_CACHE_HOME/directer, else ~/.cache/directer.
    """
    explicit = os.environ.get("DIRECTER_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "directer"
    return Path.home() / ".cache" / "directer"


def content_digest(source: Path) -> str:
    """SHA-256 of the file's content. Remembered per (path, size, mtime) in ``cache_root()/digests.json``,
    so a file is read in full once, not at every load."""
    stat = source.stat()
    index_path = cache_root() / DIGESTS_FILE
    seen = f"{source}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    if isinstance(index, dict) and isinstance(index.get(seen), str):
        return index[seen]
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 23), b""):
            digest.update(block)
    index = index if isinstance(index, dict) else {}
    index[seen] = digest.hexdigest()
    try:  # best effort: a lost update only means hashing the file again next time
        index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_name(f".{DIGESTS_FILE}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, index_path)
    except OSError:
        pass
    return index[seen]


def _cache_folder(source: Path) -> Path:
    """`cache_root()/models/<name>-<key>`, the key naming the file's content (two installations of the
    same model file share one conversion), the transformers major version and the cache format."""
    major = _transformers_version().split(".")[0]
    identity = json.dumps([content_digest(source), major, CACHE_FORMAT])
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", source.stem)[:64] or "model"
    return cache_root() / "models" / f"{name}-{key}"


def _folder_files(folder: Path) -> dict[str, int]:
    """Every file under `folder` (posix relative path -> size), the marker excepted."""
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != CACHE_MARKER
    }


def _write_marker(folder: Path, source: Path) -> None:
    stat = source.stat()
    marker = {
        "format": CACHE_FORMAT,
        "source": str(source),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": content_digest(source),
        "transformers_version": _transformers_version(),
        "files": _folder_files(folder),
    }
    (folder / CACHE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _cache_problem(folder: Path, source: Path) -> str | None:
    """Why the cached folder can't be trusted, or None if its marker and file sizes check out."""
    try:
        marker = json.loads((folder / CACHE_MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "marker file missing"
    except (OSError, ValueError):
        return "marker file unreadable"
    if not isinstance(marker, dict) or marker.get("format") != CACHE_FORMAT:
        return "marker file from another format"
    if marker.get("sha256") != content_digest(source):
        return "made from a different source file"
    files = marker.get("files")
    if not isinstance(files, dict) or "config.json" not in files:
        return "marker file lists no model files"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name} has {actual} bytes instead of {size}"
    return None


def _discard(folder: Path) -> None:
    """Remove a cache folder; renaming first means no reader ever sees it half-deleted."""
    trash = folder.with_name(f".{folder.name}.trash-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return  # another process already removed it
    except OSError as exc:  # e.g. Windows, while another process has the weights open
        raise DirecterError(
            f"cannot remove the damaged cache folder {folder}: {exc.strerror or _short(exc)}; "
            "delete it by hand"
        ) from None
    # On POSIX, processes that memory-mapped the old weights keep them until they exit.
    shutil.rmtree(trash, ignore_errors=True)


def _sweep_stale(final: Path) -> None:
    """Delete leftovers of killed conversions (old temp folders, trash) next to `final`."""
    now = time.time()
    for path in final.parent.glob(f".{final.name}.*"):
        try:
            stale = ".trash-" in path.name or now - path.stat().st_mtime > _STALE_TMP_SECONDS
        except OSError:
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)


def _save_converted(model: Any, tokenizer: Any, folder: Path) -> None:
    """Save weights (float32), config, generation config and tokenizer: all a later load needs."""
    if model.dtype != torch.float32:
        model = model.to(torch.float32)
    with _no_progress_bars():
        model.save_pretrained(folder)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and not (folder / "generation_config.json").exists():
        generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _publish(tmp: Path, final: Path, source: Path) -> None:
    """Move a finished build into place atomically; keep a valid copy another process placed first."""
    for _ in range(3):  # a few rounds in case other processes keep replacing it
        try:
            os.rename(tmp, final)  # atomic; fails when `final` exists and is not empty
            return
        except OSError:
            if not final.exists():
                raise
        if _cache_problem(final, source) is None:
            return  # theirs is complete; the caller deletes ours
        _discard(final)
    os.rename(tmp, final)


def _build_cache(source: Path, convert: Callable[[Path], ModelAndTokenizer], final: Path) -> None:
    """Convert `source` into a unique temp folder next to `final`, then publish it."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as exc:
        raise DirecterError(
            f"cannot write the model cache at {final.parent}: {exc.strerror or _short(exc)}; "
            "set DIRECTER_CACHE_DIR to a writable folder"
        ) from None
    try:
        model, tokenizer = convert(source)
        try:
            _save_converted(model, tokenizer, tmp)
            del model, tokenizer  # free the converted weights before the caller loads the copy
            _write_marker(tmp, source)  # last: its presence means every file above is complete
            _publish(tmp, final, source)
        except OSError as exc:
            raise DirecterError(
                f"cannot write the model cache at {final.parent}: {exc.strerror or _short(exc)}; "
                "free some space or set DIRECTER_CACHE_DIR to another folder"
            ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_folder(folder: Path, dtype: torch.dtype = torch.float32,
                 placement: dict[str, Any] | None = None) -> ModelAndTokenizer:
    """Load model and tokenizer from a local Hugging Face folder, without network access (``placement``:
    transformers' device_map / max_memory / offload_folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _no_progress_bars():
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True, **(placement or {}))
    return model, tokenizer


def _conversion_estimate(source: Path) -> str:
    # Measured: the bundled 98 MB file takes ~20 s on 2 CPU cores, mostly parsing GGUF metadata.
    return "about 20 s" if source.stat().st_size < 300_000_000 else "a few minutes for a file this size"


def _cached_conversion(
    source: Path,
    convert: Callable[[Path], ModelAndTokenizer],
    load: Callable[[Path], T] = _load_folder,  # type: ignore[assignment]
    *,
    label: str | None = None,
) -> T:
    """Return `load(folder)` for the cached conversion of `source`, building or repairing it first.

    `convert(source)` returns (model, tokenizer) and is only called when the cache is missing or damaged.
    Threads are serialised (see _LOAD_LOCK); processes coordinate through atomic renames.
    """
    with _LOAD_LOCK:
        return _cached_conversion_locked(source, convert, load, label)


def _cached_conversion_locked(
    source: Path, convert: Callable[[Path], ModelAndTokenizer], load: Callable[[Path], T], label: str | None
) -> T:
    source = source.resolve()
    label = label or source.name
    final = _cache_folder(source)
    if final.exists():
        problem = _cache_problem(final, source)
        if problem is None:
            try:
                return load(final)
            except Exception as exc:  # e.g. a corrupt safetensors file of the right size
                problem = f"loading failed: {_short(exc)}"
        _note(f"cached copy of {label} is damaged ({problem}); rebuilding")
        _discard(final)
    else:
        estimate = _conversion_estimate(source)
        _note(f"converting {label} once ({estimate}); later loads use the cache at {final}")
    _build_cache(source, convert, final)
    try:
        return load(final)
    except Exception as exc:
        raise DirecterError(
            f"cannot load the converted copy of {label}: {_short(exc)}; delete {final} and try again"
        ) from exc


# --------------------------------------------------------------------------- GGUF conversion


def _dense_gguf_config() -> Any:
    """Ask transformers to dequantise fully, so we get plain nn.Linear weights we can save and hook."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older 5.x: GGUF loading always dequantises
        return None
    return GgufConfig(dequantize=True)


def _convert_gguf(source: Path) -> ModelAndTokenizer:
    """Dequantise a GGUF file into a float32 transformers model and its tokenizer (~20 s for 135M)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": source.name}
    quantization_config = _dense_gguf_config()
    try:
        with _no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(source.parent, **kwargs)
            if quantization_config is not None:
                kwargs["quantization_config"] = quantization_config
            model = AutoModelForCausalLM.from_pretrained(source.parent, dtype=torch.float32, **kwargs)
    except Exception as exc:
        raise DirecterError(
            f"cannot convert {source}: {_short(exc)}; check it is a complete GGUF model file"
        ) from exc
    # A quantizer left attached makes save_pretrained refuse ("not serializable").
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    return model, tokenizer
