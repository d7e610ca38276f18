"""The anchor choice stage: choose anchor items from known models' predictions.

:func:`run_anchor_choice` (settings: :class:`AnchorChoiceSettings`) is ``medtune evaluate anchors choose``: it
reads the predictions files of several known models on the same items, chooses the anchors
(:func:`medtune.anchors.choose_anchors`) and writes ``anchors.json``. Scoring a model on the anchors only is part
of the evaluation stage (:func:`medtune.evaluation_stage.run_anchor_evaluation`), which imports this package, not
the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from medtune.anchors.artifact import write_anchors
from medtune.anchors.choose import ANCHOR_METHODS
from medtune.settings import Settings


class AnchorChoiceSettings(Settings):
    """How anchor items are chosen from the predictions of known models."""

    k: int = Field(100, ge=1, description="number of anchor items")
    method: str = Field("irt-clusters", description=f"how anchors are chosen: {', '.join(ANCHOR_METHODS)}")
    irt: str = Field("2pl", description="IRT model fitted to the known models: 1pl or 2pl")
    seed: int = Field(0, ge=0, description="clustering / sampling seed")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in ANCHOR_METHODS:
            raise ValueError(f"must be one of {', '.join(ANCHOR_METHODS)}, not {v!r}")
        return v

    @field_validator("irt")
    @classmethod
    def _irt_model(cls, v: str) -> str:
        if v not in ("1pl", "2pl"):
            raise ValueError(f"must be 1pl or 2pl, not {v!r}")
        return v


def run_anchor_choice(settings: AnchorChoiceSettings, predictions: Sequence[str | Path], out: str | Path
                      ) -> dict[str, Any]:
    """Choose ``settings.k`` anchors from the predictions files of known models (all on the same items, never of
    the model to be estimated) and write them to ``out`` (``anchors.json``).

    Returns the anchors' count, the items' count, the method, the IRT model and whether its fit converged, the
    number of known models, the smallest and largest weight, and the file written.
    """
    from medtune.anchors.choose import choose_anchors
    from medtune.anchors.responses import responses_from_predictions

    responses = responses_from_predictions(list(predictions))
    anchor_set = choose_anchors(responses, k=settings.k, seed=settings.seed,
                                method=settings.method, irt=settings.irt)  # type: ignore[arg-type]
    path = write_anchors(anchor_set, Path(out))
    w = anchor_set.weights
    return {"k": anchor_set.k, "n_items": anchor_set.n_items, "method": settings.method, "irt": settings.irt,
            "converged": anchor_set.irt.get("converged"), "known_models": len(predictions),
            "weight_min": float(w.min()), "weight_max": float(w.max()), "anchors": str(path)}
