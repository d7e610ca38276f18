"""The ``synthetic`` source: the embedded demo dataset (a deterministic, fictional medical knowledge base, its
textbook and its MCQs) as a loader that takes no path; its options are the generator's arguments.

Why a fictional world: the demo must run offline on 2 CPU cores with a ~0.6 M-parameter Llama that is
pretrained from scratch, so the facts must be few, learnable in minutes, and certainly unknown to any model
beforehand (invented names, so nothing can be answered from prior knowledge and no real medical claim is
made). Each part is made by its own module, each choice one the tiny model needs in order to learn from the
data (the check at the end shows it does):

* **Knowledge base** (:mod:`medtune.data.synthetic_world`): organ systems × invented diseases, each with
  symptoms no other disease shares as a pair, a cause, a diagnostic test and a first-line drug; half of each
  system's diseases held out.
* **Textbook** (:mod:`medtune.data.synthetic_textbook`): every fact in 4–5 sentence templates, reverse ones
  included (findings → disease).
* **Questions** (:mod:`medtune.data.synthetic_questions`): 4 options at three human-defined levels (recall, one
  inference step, two), held-out diseases in test questions only, test phrasings unseen in training, wrong
  options from the answer's own half, balanced answer positions.

The same knowledge base and textbook serve the free-text task of :mod:`medtune.data.synthetic_qa`; both
loaders also return the knowledge base as a fact sheet (``extras["facts"]``, :mod:`medtune.factsheet`), which the
data stage writes beside the items as ``<stem>.facts.json``.

Default sizes (seed 0, 6 systems × 8 diseases): 576 train questions (192 per level, trained diseases only),
432 test questions (144 per level; 216 on trained diseases, 216 held out), a textbook of about 1,130
sentences with a word vocabulary of about 350. Generation takes well under a second.

Checked once on seed 0 by a throw-away script (not a test): the default tiny Llama (~0.7 M parameters with
a tokenizer trained on these texts) pretrained 100 epochs on the textbook (lr 3e-3), then fine-tuned 240
steps at batch 16 (lr 3e-4) on the option-text completions, scores 69 % on the test split by option-text
log-likelihood (easy 92 %, medium 61 %, hard 53 %; trained diseases 87 %, held out 51 %); the
pretrained-only model scores 25 % (chance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtune.data.registry import LoadResult, OnError, register_loader
from medtune.data.synthetic_questions import SOURCE, generate_synthetic
from medtune.data.synthetic_world import knowledge_base_facts
from medtune.errors import InputError
from medtune.schema import Item


def generator_options(generator: Any = None) -> tuple[str, ...]:
    """The options a generated source takes: its generator's arguments but the seed (default: this source's)."""
    import inspect

    return tuple(p for p in inspect.signature(generator or generate_synthetic).parameters if p != "seed")


def load_generated(
    source: str, generator: Any, path: str | Path | None, seed: int, split: str | None, options: dict[str, Any]
) -> tuple[Any, list[Item]]:
    """Run a synthetic ``generator`` for a loader: check the options, generate, keep ``split``.

    Returns the generated dataset and its (kept) items. Shared by the generated sources so that they take
    options and splits alike.
    """
    if path is not None:
        raise InputError(f"the {source} source takes no path", file=path)
    allowed = set(generator_options(generator))
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"unknown option(s) for {source}: {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    try:
        ds = generator(seed=int(seed), **{k: int(v) for k, v in options.items()})
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad {source} option: {exc}") from None
    items = list(ds.items)
    if split is not None:
        if split not in ("train", "test"):
            raise InputError(f"{source} has splits 'train' and 'test', not '{split}'", field="split")
        items = [it for it in items if it.split == split]
    return ds, items


@register_loader("synthetic", needs_path=False, options=generator_options(),
                 description="Generated fictional medical knowledge base (the embedded demo; no path)")
def load_synthetic(
    path: str | Path | None = None,
    *,
    on_error: OnError = "raise",
    seed: int = 0,
    split: str | None = None,
    **options: Any,
) -> LoadResult:
    """Generate the synthetic dataset; ``split`` keeps one split; the textbook is ``extras["textbook"]``.

    ``options`` are :func:`generate_synthetic`'s keyword arguments (n_systems, diseases_per_system, ...).
    ``extras["facts"]`` is the knowledge base's :class:`~medtune.factsheet.FactSheet`.
    """
    ds, items = load_generated(SOURCE, generate_synthetic, path, seed, split, options)
    return LoadResult(items, [], {"textbook": ds.textbook, "knowledge_base": ds.knowledge_base.to_dict(),
                                  "facts": knowledge_base_facts(ds.knowledge_base)})
