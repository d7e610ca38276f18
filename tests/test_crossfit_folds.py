"""Cross-fitting's fold split without training: a fold that would leave no item to train on is refused, naming
the fold and the repeat, before any fine-tune starts."""

from __future__ import annotations

import pytest

from medtune.difficulty_crossfit import CROSSFIT_FOLD_SEED, CrossfitSettings, _crossfit_repeat, fold_of
from medtune.errors import InputError
from medtune.schema import MCQItem


def _item(item_id: str) -> MCQItem:
    return MCQItem(id=item_id, question="Q?", options=["a", "b", "c", "d"], answer=0, source="t", split="train")


@pytest.mark.parametrize("fold", [0, 1])
def test_a_fold_holding_every_item_is_refused_before_training(fold):
    # one item: the fold holding it has no training items; an empty fold before it is skipped, not the end
    item_id = next(f"x{i}" for i in range(100) if fold_of(f"x{i}", CROSSFIT_FOLD_SEED + 3, 2) == fold)
    with pytest.raises(InputError) as err:
        _crossfit_repeat([_item(item_id)], CrossfitSettings(folds=2), "base", 3, training=None, progress=False)
    assert err.value.reason == f"crossfit: fold {fold} of repeat 3 leaves no training item"


def test_folds_are_fixed_per_seed_and_id():
    assert [fold_of(f"q{i}", 1000, 3) for i in range(8)] == [fold_of(f"q{i}", 1000, 3) for i in range(8)]
    split = [fold_of(f"q{i}", 1000, 4) for i in range(400)]
    assert set(split) == {0, 1, 2, 3} and all(60 < split.count(k) < 140 for k in range(4))
