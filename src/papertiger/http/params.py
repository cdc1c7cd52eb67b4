"""An endpoint's parameters, declared and checked: strings in, typed values out. Pure.

Theory of operation
-------------------
:func:`~.forms.decode_form` leaves every leaf a ``str``.  Each endpoint
declares its parameters as a :class:`Hash` of specs; :meth:`Spec.check`
walks the decoded value, converts each leaf (``"10"`` to ``10``,
``"true"`` to ``True``) and raises :class:`~.errors.APIError` naming the
parameter at fault the way Stripe writes it (``line_items[0][quantity]``),
with Stripe's codes where Stripe has one:

* a parameter not declared: ``parameter_unknown``;
* a required one absent: ``parameter_missing``;
* an integer that is not one, or out of range: ``parameter_invalid_integer``;
* an empty string where a value is needed: ``parameter_invalid_empty``;
* two parameters of which only one may be given: ``parameters_exclusive``;
* anything else (a hash where a string belongs, a value not in an enum, a
  boolean that is not ``true``/``false``): no code, as Stripe does.

Checking is all-or-nothing and touches nothing but its input, so a request
refused here has changed nothing.  Cost: O(size of the parameters).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import APIError, invalid, missing, unknown

__all__ = [
    "UNSET",
    "Array",
    "Boolean",
    "Created",
    "Decimal",
    "Hash",
    "Integer",
    "Metadata",
    "Spec",
    "String",
    "exclusive",
]

_INTEGER = re.compile(r"-?[0-9]+\Z")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?\Z")
_INT64 = 2**63 - 1

#: What a parameter given as an empty string becomes where Stripe allows unsetting it.
UNSET: Any = None


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a hash"
    if isinstance(value, list):
        return "an array"
    return f"the string {value!r}"


class Spec:
    """One parameter's type. ``unsettable``: an empty string is accepted and means "unset"."""

    unsettable = False

    def check(self, value: Any, param: str) -> Any:
        raise NotImplementedError

    def _empty(self, value: Any, param: str) -> bool:
        """True when ``value`` is the empty string and this parameter may be unset by it."""
        if value == "":
            if self.unsettable:
                return True
            raise invalid(
                f"You passed an empty string for '{param}'. We assume empty values are an "
                f"attempt to unset a parameter; however '{param}' cannot be unset. You should "
                f"remove '{param}' from your request or supply a non-empty value.",
                param,
                code="parameter_invalid_empty",
            )
        return False


class String(Spec):
    """A string; ``enum`` limits it to those values, ``max_length`` its length."""

    def __init__(
        self,
        enum: tuple[str, ...] | None = None,
        *,
        max_length: int = 5000,
        unsettable: bool = False,
        check: Callable[[str, str], None] | None = None,
    ) -> None:
        self.enum = enum
        self.max_length = max_length
        self.unsettable = unsettable
        self.extra = check

    def check(self, value: Any, param: str) -> Any:
        if not isinstance(value, str):
            raise invalid(f"Invalid {param}: expected a string, got {_kind(value)}.", param)
        if self._empty(value, param):
            return UNSET
        if self.enum is not None and value not in self.enum:
            raise invalid(f"Invalid {param}: must be one of {_one_of(self.enum)}.", param)
        if len(value) > self.max_length:
            raise invalid(
                f"Invalid {param}: {len(value)} characters long; the most is {self.max_length}.",
                param,
            )
        if self.extra is not None:
            self.extra(value, param)
        return value


def _one_of(values: tuple[str, ...]) -> str:
    if len(values) == 1:
        return values[0]
    return ", ".join(values[:-1]) + f", or {values[-1]}"


class Integer(Spec):
    """A decimal integer, within ``[minimum, maximum]``."""

    def __init__(
        self, minimum: int | None = None, maximum: int | None = None, *, unsettable: bool = False
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.unsettable = unsettable

    def check(self, value: Any, param: str) -> Any:
        if not isinstance(value, str):
            raise invalid(
                f"Invalid integer: {param} must be an integer, got {_kind(value)}.",
                param,
                code="parameter_invalid_integer",
            )
        if self._empty(value, param):
            return UNSET
        if not _INTEGER.match(value) or abs(int(value)) > _INT64:
            raise invalid(
                f"Invalid integer: {value[:100]}", param, code="parameter_invalid_integer"
            )
        number = int(value)
        if self.minimum is not None and number < self.minimum:
            raise invalid(
                f"This value must be greater than or equal to {self.minimum}.",
                param,
                code="parameter_invalid_integer",
            )
        if self.maximum is not None and number > self.maximum:
            raise invalid(
                f"This value must be less than or equal to {self.maximum}.",
                param,
                code="parameter_invalid_integer",
            )
        return number


class Decimal(Spec):
    """A decimal number given as a string (``unit_amount_decimal``); kept as the string."""

    def check(self, value: Any, param: str) -> Any:
        if self._empty(value, param):
            return UNSET
        if not isinstance(value, str) or not _DECIMAL.match(value):
            shown = value[:100] if isinstance(value, str) else _kind(value)
            raise invalid(f"Invalid decimal: {shown}", param)
        return value


class Boolean(Spec):
    """``true`` or ``false``."""

    def check(self, value: Any, param: str) -> Any:
        if self._empty(value, param):
            return UNSET
        if value == "true":
            return True
        if value == "false":
            return False
        shown = value[:100] if isinstance(value, str) else _kind(value)
        raise invalid(f"Invalid boolean: {shown} (for {param}; use true or false).", param)


class Metadata(Spec):
    """Stripe's ``metadata``: up to 50 string keys (40 chars) of string values (500 chars).

    An empty value means "remove this key" and an empty ``metadata`` "remove
    them all"; both are kept as ``""`` for the endpoint to apply.
    """

    unsettable = True
    MAX_KEYS = 50
    MAX_KEY = 40
    MAX_VALUE = 500

    def check(self, value: Any, param: str) -> Any:
        if value == "":
            return ""
        if not isinstance(value, dict):
            raise invalid(
                f"Invalid {param}: expected a hash of strings ({param}[key]=value), got "
                f"{_kind(value)}.",
                param,
            )
        if len(value) > self.MAX_KEYS:
            raise invalid(
                f"Invalid {param}: {len(value)} keys; the most is {self.MAX_KEYS}.", param
            )
        for key, item in value.items():
            where = f"{param}[{key}]"
            if not isinstance(item, str):
                raise invalid(f"Invalid {where}: expected a string, got {_kind(item)}.", where)
            if len(key) > self.MAX_KEY:
                raise invalid(
                    f"Invalid {param}: key {key[:60]!r} is {len(key)} characters; the most is "
                    f"{self.MAX_KEY}.",
                    where,
                )
            if len(item) > self.MAX_VALUE:
                raise invalid(
                    f"Invalid {where}: {len(item)} characters; the most is {self.MAX_VALUE}.",
                    where,
                )
        return dict(value)


class Array(Spec):
    """A list of ``item`` (``expand[0]=a`` or ``expand[]=a``), at most ``max_items`` long."""

    def __init__(self, item: Spec, *, max_items: int = 100, unsettable: bool = False) -> None:
        self.item = item
        self.max_items = max_items
        self.unsettable = unsettable

    def check(self, value: Any, param: str) -> Any:
        if self._empty(value, param):
            return UNSET
        if not isinstance(value, list):
            raise invalid(
                f"Invalid array: {param} must be an array ({param}[0]=...), got {_kind(value)}.",
                param,
            )
        if len(value) > self.max_items:
            raise invalid(
                f"Invalid {param}: {len(value)} items; the most is {self.max_items}.", param
            )
        return [self.item.check(item, f"{param}[{i}]") for i, item in enumerate(value)]


class Hash(Spec):
    """A hash of declared fields; ``required`` must be present; others are refused."""

    def __init__(
        self,
        fields: Mapping[str, Spec],
        *,
        required: tuple[str, ...] = (),
        unsettable: bool = False,
        rules: tuple[Callable[[dict[str, Any], str], None], ...] = (),
    ) -> None:
        self.fields = dict(fields)
        self.required = required
        self.unsettable = unsettable
        self.rules = rules

    def check(self, value: Any, param: str) -> Any:
        if self._empty(value, param):
            return UNSET
        if not isinstance(value, dict):
            raise invalid(
                f"Invalid hash: {param} must be a hash ({param}[field]=...), got {_kind(value)}.",
                param,
            )
        return self.check_fields(value, param)

    def check_fields(self, value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        """Check every field of ``value``; ``prefix`` is its parameter name ("" at the top)."""
        out: dict[str, Any] = {}
        for name, item in value.items():
            where = f"{prefix}[{name}]" if prefix else name
            spec = self.fields.get(name)
            if spec is None:
                raise unknown(where, tuple(self.fields))
            out[name] = spec.check(item, where)
        for name in self.required:
            if out.get(name) is None:
                raise missing(f"{prefix}[{name}]" if prefix else name)
        for rule in self.rules:
            rule(out, prefix)
        return out


class Created(Spec):
    """A ``created`` filter: an integer, or a hash of ``gt``/``gte``/``lt``/``lte`` integers."""

    _BOUNDS = Hash({op: Integer() for op in ("gt", "gte", "lt", "lte")})

    def check(self, value: Any, param: str) -> Any:
        if isinstance(value, dict):
            if not value:
                raise invalid(f"Invalid {param}: give gt, gte, lt or lte.", param)
            return self._BOUNDS.check(value, param)
        return Integer().check(value, param)


def exclusive(*names: str, one_required: bool = False) -> Callable[[dict[str, Any], str], None]:
    """A :class:`Hash` rule: at most one of ``names`` (exactly one with ``one_required``)."""

    def rule(values: dict[str, Any], prefix: str) -> None:
        given = [n for n in names if values.get(n) is not None]
        full = [f"{prefix}[{n}]" if prefix else n for n in names]
        if len(given) > 1:
            raise APIError(
                400,
                f"You may only specify one of these parameters: {', '.join(full)}.",
                code="parameters_exclusive",
                param=f"{prefix}[{given[1]}]" if prefix else given[1],
            )
        if one_required and not given:
            raise APIError(
                400,
                f"Missing required param: one of {', '.join(full)}.",
                code="parameter_missing",
                param=full[0],
            )

    return rule
