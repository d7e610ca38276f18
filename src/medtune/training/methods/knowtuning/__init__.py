"""``knowtuning``: KnowTuning (Lyu et al., EMNLP 2024), knowledge-aware fine-tuning in two stages.

1. **KA, fine-grained knowledge augmentation** (:mod:`.augmentation`): each answer's atomic facts
   (:mod:`.facts`) are scored by their perplexity given the question under the base model; the hardest share
   becomes new one-fact question-answer pairs; the standard loop fine-tunes on the originals plus those pairs.
2. **KC, coarse-grained knowledge comparison** (:mod:`.corruption`, :mod:`.preference`): each answer is
   preferred over three corruptions — facts deleted, revised to be wrong, shuffled — by TRL's DPOTrainer, DPO
   plus a supervised term on the answer, with the KA model as the reference.

The method cannot be a prepare/optimizer pair: it overrides :meth:`MethodSpec.train_run` and runs both stages
(:mod:`.stages`). What trains in each stage is ``knowtuning.inner_method`` (:mod:`.inner`); the run's result is
a full, merged ``model/``, so the spec says ``is_adapter=False`` and evaluation reads the run like a ``full`` one.

The three steps the authors gave to GPT-3.5/4 (fact extraction, KA rewriting, KC revision) run by offline rules
unless ``knowtuning.generator`` names a generation backend (:mod:`.generator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from medtune.errors import ConfigError
from medtune.training.method_settings import KnowTuningSettings
from medtune.training.methods.base import MethodSpec, StandardLoop, register_method
from medtune.training.methods.knowtuning.inner import KNOWTUNING_LORA

if TYPE_CHECKING:
    from medtune.training.config import TrainSettings
    from medtune.training.result import TrainResult

# The TrainSettings fields KnowTuning reads besides its own group (``knowtuning``: KnowTuningSettings): the
# adapter its stages train (``lora``).
KNOWTUNING_SETTINGS: tuple[str, ...] = ("lora",)


@dataclass(frozen=True)
class KnowTuningMethod(MethodSpec):
    """Two stages of training behind one method name; the inner method trains in each."""

    def prepare(self, model: nn.Module, config: TrainSettings) -> nn.Module:
        raise ConfigError("knowtuning trains in stages of its own (MethodSpec.train_run): its KA stage runs "
                          f"'{KNOWTUNING_LORA.name}' or 'full', its KC stage TRL's DPOTrainer")

    def train_run(self, config: TrainSettings, items: Any, order: dict[str, Any], run_dir: Path, *,
                  loop: StandardLoop, **options: Any) -> TrainResult:
        from medtune.training.methods.knowtuning.stages import run_knowtuning

        return run_knowtuning(config, items, order, Path(run_dir), loop=loop, **options)


KNOWTUNING = register_method(KnowTuningMethod(
    name="knowtuning", summary="KnowTuning on free-text items: hardest facts as extra QA pairs (KA), then DPO "
                               "against deleted / revised / shuffled facts (KC); saves a full model/",
    is_adapter=False, settings=KNOWTUNING_SETTINGS, settings_class=KnowTuningSettings, settings_group="knowtuning",
))

__all__ = ["KNOWTUNING", "KNOWTUNING_SETTINGS", "KnowTuningMethod"]
