"""``Plain``: the base of flowcore's small record classes (config entries, manifest records,
the installer's distributions and options).

What ``@dataclass`` would generate for them (``__init__``, ``__eq__``, ``__repr__``, ``__hash__``
for the immutable ones), written once: the dataclasses import and the code it generates per
class cost ~2.5 ms of a start or a ``flow plugin add``. Each subclass lists its fields in
``__slots__``; one with defaults writes its own ``__init__``.
"""

from __future__ import annotations

from typing import Any


class Plain:
    __slots__: tuple[str, ...] = ()
    #: Hashable by value (a frozen dataclass); the others are not hashable, as with dataclasses.
    _hashable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for name, value in zip(self.__slots__, args, strict=False):
            setattr(self, name, value)
        for name, value in kwargs.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Plain)
        return self._values() == other._values()

    def __hash__(self) -> int:
        if not self._hashable:
            raise TypeError(f"unhashable type: '{type(self).__name__}'")
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
