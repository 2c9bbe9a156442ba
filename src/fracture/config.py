"""Typed config sections built from Hydra nodes, so library code never reads raw DictConfigs."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def to_container(node: Any) -> Any:
    """A resolved plain dict/list from an OmegaConf node (plain values pass through)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def typed(cls: type[T], node: Any, section: str, ignore: tuple[str, ...] = ()) -> T:
    """Build dataclass `cls` from a config node; nested dataclass fields are built too.

    Unknown keys are an error naming `section.key`, so a typo in an override never goes
    unnoticed. Keys in `ignore` are dropped silently.
    """
    values = dict(to_container(node) or {})
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known) - set(ignore))
    if unknown:
        raise ValueError(
            f"Unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
            f"known: {', '.join(sorted(known))}."
        )
    kwargs = {}
    for name, value in values.items():
        if name in ignore:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = typed(hint, value, f"{section}.{name}")
        kwargs[name] = value
    return cls(**kwargs)
