"""fast_init: a frozen slotted dataclass with the slot-storing __init__ behaves exactly as the stock one."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from jouled.fastinit import fast_init
from jouled.model import Marker
from jouled.windows import Window


def _fields_class(name: str) -> type[Any]:
    """A frozen, slotted dataclass with every kind of field fast_init copies (a fresh class at each call), named as
    the module-level name it is bound to (so pickle finds it)."""

    @dataclass(frozen=True, slots=True)
    class Fields:
        a: int
        b: str
        c: int | None = None
        d: tuple[str, ...] = ()
        e: dict[str, Any] = field(default_factory=dict)
        f: list[int] = field(default_factory=list)

    Fields.__name__ = Fields.__qualname__ = name
    return Fields


Stock = _fields_class("Stock")  # dataclass's own __init__
Fast = fast_init(_fields_class("Fast"))  # the same class, built through its slots


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1, "x"), {}),
    ((1, "x", 3), {}),
    ((1,), {"b": "y", "f": [1]}),
    ((), {"a": 2, "b": "z", "c": None, "d": ("g",), "e": {"k": 1.5}, "f": []}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_same_fields_as_the_stock_init(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    s, f = Stock(*args, **kwargs), Fast(*args, **kwargs)
    assert dataclasses.astuple(s) == dataclasses.astuple(f)
    assert repr(s).replace("Stock", "Fast") == repr(f)
    assert f == Fast(*args, **kwargs)
    assert pickle.loads(pickle.dumps(f)) == f


def test_the_init_is_replaced() -> None:
    for cls in (Fast, Marker, Window):  # stores through the slots' setters, not object.__setattr__ as dataclass does
        names = cls.__init__.__code__.co_names
        assert "_set0" in names and "__setattr__" not in names
    assert "__setattr__" in Stock.__init__.__code__.co_names


def test_default_factories_give_each_object_its_own() -> None:
    one, two = Fast(1, "x"), Fast(1, "x")
    assert one.e == {} and one.e is not two.e and one.f is not two.f


def test_still_frozen_hashable_and_replaceable() -> None:
    f = Fast(1, "x", d=("a",), e={}, f=[])
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.a = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del f.b  # type: ignore[misc]
    w = Window("r", "epoch", 1, None, None, ("gpu0",), 10, 20, "h")
    assert hash(w) == hash(Window("r", "epoch", 1, None, None, ("gpu0",), 10, 20, "h"))
    assert dataclasses.replace(f, c=5) == Fast(1, "x", 5, ("a",))


def test_argument_errors_are_the_stock_ones() -> None:
    with pytest.raises(TypeError, match="missing 5 required positional arguments"):
        Marker(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        Fast(1, "x", nope=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        Fast(1, "x", a=2)  # type: ignore[misc]


def test_marker_as_before() -> None:
    m = Marker(5, "h", "r", "epoch", "start", 3, epoch=2)
    assert (m.epoch, m.phase, m.gpus, m.attrs, m.mono_ns) == (2, None, (), {}, None)
    assert m == Marker(5, "h", "r", "epoch", "start", 3, 2)
    assert Marker.__init__.__qualname__ == "Marker.__init__"


def test_refuses_what_it_cannot_copy() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class NoInit:
        a: int
        b: int = field(default=0, init=False)

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KwOnly:
        a: int

    for cls in (NoSlots, NotFrozen, PostInit, NoInit, KwOnly, int):
        with pytest.raises(TypeError, match="fast_init"):
            fast_init(cls)
