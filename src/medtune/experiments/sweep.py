"""Per-arm hyper-parameter sweeps: the settings a grid's ``training.sweep`` names, one cell per setting.

An arm (strategy × method × model × training set) trained at one learning rate compares the arms at that rate
only: a method that needs another rate lags for that reason alone, and which order wins can flip with the rate
(Dodge et al. 2020). A sweep trains every arm at every setting of a small product of values, so the report can
compare the arms each at its own best setting (chosen on validation items, :mod:`medtune.experiments.selection`)
beside the comparison at one shared setting.

The YAML shape, inside the grid's ``training:`` section::

    sweep: {lr: [1e-4, 3e-4], lora.r: [8, 16]}      # every method
    sweep_by_method: {full: {lr: [1e-5, 3e-5]}}      # a method's own values (its keys win over `sweep`'s)
    sweep_shared: {lr: 1e-4}                         # the one setting all arms are also compared at

A key is a training setting (``lr``, ``epochs``, ``warmup_steps``, ...) or one setting of a method's group
(``lora.r``, ``galore.rank``). The settings of an arm are the product of its lists, the first key outermost:
that is "sweep order", which breaks ties in the selection. Without ``sweep_shared`` the shared setting is each
arm's first one (the first value of every list).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Annotated, Any

SweepValue = bool | int | float | str
# A key no sweep may name: the grid's axes and the sweep itself.
NOT_SWEPT = ("method", "model", "seed", "methods", "epoch_policy", "preset", "sweep", "sweep_by_method",
             "sweep_shared")


def _field(key: str) -> Any:
    """The pydantic field a sweep key names (a ``TrainSettings`` field or ``group.field``), or a ValueError."""
    from medtune.training.config import TrainSettings
    from medtune.training.method_settings import settings_groups

    groups = settings_groups()
    group, dot, name = key.partition(".")
    if dot:
        if group not in groups:
            raise ValueError(f"{key}: '{group}' is not a settings group ({', '.join(sorted(groups))})")
        if name not in groups[group].model_fields:
            raise ValueError(f"{key}: '{name}' is not a setting of {group} "
                             f"({', '.join(sorted(groups[group].model_fields))})")
        return groups[group].model_fields[name]
    if key in groups:
        raise ValueError(f"{key}: sweep one setting of the group at a time ({key}.NAME)")
    if key not in TrainSettings.model_fields or key in NOT_SWEPT:
        raise ValueError(f"{key}: not a training setting a sweep can vary")
    return TrainSettings.model_fields[key]


def check_sweep(values: Mapping[str, Any]) -> dict[str, list[SweepValue]]:
    """``values`` as a sweep, each value of its setting's type (YAML reads ``1e-4`` as text: here it becomes the
    number 0.0001), or a ValueError whose message starts with the offending key (``lr_rate: ...``)."""
    from pydantic import TypeAdapter, ValidationError

    out: dict[str, list[SweepValue]] = {}
    for key, vals in values.items():
        info = _field(str(key))
        if not isinstance(vals, list) or not vals:
            raise ValueError(f"{key}: give a non-empty list of values")
        # The field's type and bounds (ge, gt ...), as its schema checks them.
        bounded = (info.annotation, *info.metadata)
        adapter = TypeAdapter(Annotated[bounded] if info.metadata else info.annotation)
        typed = []
        for v in vals:
            try:
                typed.append(adapter.validate_python(v))
            except ValidationError as exc:
                raise ValueError(f"{key}: {v!r}: {exc.errors()[0]['msg']}") from None
        if any(isinstance(v, (dict, list, tuple)) or v is None for v in typed):
            raise ValueError(f"{key}: values must be numbers, strings or booleans")
        if len({json.dumps(v) for v in typed}) != len(typed):
            raise ValueError(f"{key}: a value is listed twice")
        out[str(key)] = typed
    return out


def expand_settings(values: Mapping[str, list[SweepValue]]) -> list[dict[str, SweepValue]]:
    """Every setting of a sweep, in sweep order (the first key outermost); ``[{}]`` for no sweep."""
    keys = list(values)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(values[k] for k in keys))]


def setting_label(setting: Mapping[str, SweepValue]) -> str | None:
    """The setting as text (``lr=0.0001,lora.r=8``): a cell's axis value, its id's last part; None without one."""
    if not setting:
        return None
    return ",".join(f"{k}={json.dumps(v) if isinstance(v, str) else _number(v)}" for k, v in setting.items())


def _number(v: SweepValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)  # exact: two close learning rates never share a label


def training_layer(setting: Mapping[str, SweepValue]) -> dict[str, Any]:
    """The setting as a layer of training settings (``lora.r`` nested into ``{"lora": {"r": ...}}``)."""
    out: dict[str, Any] = {}
    for key, value in setting.items():
        group, dot, field = key.partition(".")
        if dot:
            out.setdefault(group, {})[field] = value
        else:
            out[key] = value
    return out


def method_sweep(sweep: Mapping[str, list[SweepValue]], by_method: Mapping[str, Mapping[str, list[SweepValue]]],
                 method: str) -> dict[str, list[SweepValue]]:
    """The sweep of one method: the shared keys, with the method's own keys added or replacing theirs."""
    return {**sweep, **by_method.get(method, {})}


def shared_setting(values: Mapping[str, list[SweepValue]], shared: Mapping[str, SweepValue]) -> dict[str, SweepValue]:
    """The arm's setting in the comparison at one shared setting: ``sweep_shared``'s value for each key it names,
    the first value for the others."""
    return {k: shared.get(k, v[0]) for k, v in values.items()}


def check_shared(shared: Mapping[str, Any], sweeps: Mapping[str, Mapping[str, list[SweepValue]]]) -> None:
    """``sweep_shared`` names swept keys only, with a value every method that sweeps the key lists."""
    for key, value in shared.items():
        having = {m: s[key] for m, s in sweeps.items() if key in s}
        if not having:
            raise ValueError(f"{key}: not a swept setting")
        lacking = [m for m, vals in having.items() if json.dumps(value) not in {json.dumps(v) for v in vals}]
        if lacking:
            raise ValueError(f"{key}: {value!r} is not among the values swept for {', '.join(lacking)}")
