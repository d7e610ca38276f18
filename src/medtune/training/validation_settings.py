"""The settings of validation during training: held-out items, how often, early stopping and the best checkpoint.

One group of the training settings (``training: {validation: {share: 0.1, every: 20, patience: 3}}`` in a grid,
``--validation-share 0.1 --validation-every 20 --validation-patience 3`` on the command line), flat inside the
group so every setting has one option and one YAML key. It imports no torch: the schema, the loop and
``verify-order`` all read it.

The validation items are either a file (``items``, e.g. the dev split of the data set) or a seeded ``share`` of
the training order held out: those items are removed from the order before the steps are planned, so training
never sees them (the run records their ids). The share is drawn with its own ``seed``, not the run's, so runs of
one grid that differ only in their seed or strategy hold out the same items and stay comparable.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medtune.settings import Settings

ValidationMetric = Literal["val_loss", "val_accuracy"]


class ValidationSettings(Settings):
    """Held-out validation during training (off unless ``items`` or ``share`` is set)."""

    items: str | None = Field(None, description="items file of the validation items (e.g. the dev split); items "
                                                "also in the training order are held out of training")
    split: str | None = Field(None, description="split of the validation items file to take (default: every item)")
    share: float | None = Field(None, gt=0, lt=1, description="hold out this share of the training order's items "
                                                              "for validation (instead of a file)")
    seed: int = Field(0, description="seed of the held-out share (the same items for every run seed)")
    max_items: int | None = Field(None, ge=1, description="validate on at most this many items (the first ones)")
    every: int | None = Field(None, ge=1, description="validate every N optimizer steps (default: only after the "
                                                      "last step)")
    metric: ValidationMetric = Field("val_loss", description="what early stopping and the best checkpoint follow: "
                                                             "val_loss (lower is better) or val_accuracy (higher, "
                                                             "multiple-choice items)")
    patience: int | None = Field(None, ge=1, description="early stopping: stop after this many validations "
                                                         "without improvement (default: never stop early)")
    min_delta: float = Field(0.0, ge=0, description="early stopping: the least change of the metric that counts "
                                                    "as an improvement")
    keep_best: bool = Field(False, description="the run's model is the weights of the best validation, not the "
                                               "last step's")

    @property
    def enabled(self) -> bool:
        return self.items is not None or self.share is not None

    @model_validator(mode="after")
    def _one_source(self) -> ValidationSettings:
        """One source of validation items, and no setting that would silently do nothing without one."""
        if self.items is not None and self.share is not None:
            raise ValueError("set items (a file) or share (held out of the order), not both")
        if not self.enabled:
            stray = [f for f in ("split", "max_items", "every", "patience") if getattr(self, f) is not None]
            stray += ["keep_best"] if self.keep_best else []
            if stray:
                raise ValueError(f"{', '.join(stray)} set without validation items (items or share)")
        if self.split is not None and self.items is None:
            raise ValueError("split names a split of the items file, which is not set")
        return self
