"""One registry type for everything that is chosen by name (algorithms, backbones, metrics, ...).

A registry refuses duplicate names, lists its names in registration order and raises an
`UnknownName` error (a `KeyError`) that names the valid choices. The CLI's choices, the docs and
the parametrised tests all read from these registries, so nothing is listed twice by hand.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping filled by a decorator.

    Args:
        kind: what is registered, for messages ("algorithm").
        sets_name: `register(name)` also sets the object's `name` attribute, so a registered
            class knows its own name without repeating it (`name = "..."`) in its body.

    Example:
        >>> BACKBONES = Registry("backbone")
        >>> @BACKBONES.register("tiny")
        ... def tiny(): ...
        >>> BACKBONES.get("tiny") is tiny
        True
    """

    def __init__(self, kind: str, sets_name: bool = False) -> None:
        self.kind = kind
        self.sets_name = sets_name
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self.sets_name:
                obj.name = name  # type: ignore[attr-defined]
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._items)}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
