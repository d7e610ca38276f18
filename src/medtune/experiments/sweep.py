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
from typing import Any

SweepValue = bool | int | float | str
# A key no sweep may name: the grid's axes and the sweep itself.
NOT_SWEPT = ("method", "model", "seed", "methods", "epoch_policy", "preset", "sweep", "sweep_by_method",
             "sweep_shared")


def known_keys() -> tuple[set[str], dict[str, set[str]]]:
    """The training settings a sweep may name: the fields of ``TrainSettings`` and of each settings group."""
    from medtune.training.config import TrainSettings
    from medtune.training.method_settings import settings_groups

    groups = {name: set(cls.model_fields) for name, cls in settings_groups().items()}
    fields = {f for f in TrainSettings.model_fields if f not in groups} - set(NOT_SWEPT)
    return fields, groups


def check_sweep(values: Mapping[str, Any]) -> dict[str, list[SweepValue]]:
    """``values`` as a sweep, or a ValueError whose message starts with the offending key (``lr_rate: ...``)."""
    fields, groups = known_keys()
    out: dict[str, list[SweepValue]] = {}
    for key, vals in values.items():
        group, dot, field = str(key).partition(".")
        if dot:
            if group not in groups:
                raise ValueError(f"{key}: '{group}' is not a settings group ({', '.join(sorted(groups))})")
            if field not in groups[group]:
                raise ValueError(f"{key}: '{field}' is not a setting of {group} "
                                 f"({', '.join(sorted(groups[group]))})")
        elif key in groups:
            raise ValueError(f"{key}: sweep one setting of the group at a time ({key}.NAME)")
        elif key not in fields:
            raise ValueError(f"{key}: not a training setting a sweep can vary")
        if not isinstance(vals, list) or not vals:
            raise ValueError(f"{key}: give a non-empty list of values")
        if any(not isinstance(v, SweepValue) for v in vals):  # type: ignore[arg-type,misc]
            raise ValueError(f"{key}: values must be numbers, strings or booleans")
        if len({json.dumps(v) for v in vals}) != len(vals):
            raise ValueError(f"{key}: a value is listed twice")
        out[str(key)] = list(vals)
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
