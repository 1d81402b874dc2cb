"""Helpers shared by the experiment configs."""

import ml_collections
from ml_collections import config_dict

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def parse_arg(arg, **defaults):
    """Parses a config argument string such as `"quick"` or `"target=0.3,cost=params"`.

    A bare name sets a boolean default to True; `key=value` converts `value` to
    the type of the default. Unknown keys are an error, so a typo never passes
    silently.

    Args:
        arg: Str or None, comma-separated items.
        **defaults: The accepted keys and their default values.

    Returns:
        An `ml_collections.ConfigDict` of the parsed values.

    Raises:
        ValueError: for an unknown key or a value of the wrong type.
    """
    parsed = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"Unhandled config arg {key!r}; accepted: {sorted(defaults)}. Received: arg={arg!r}")
        default = defaults[key]
        if not value:
            if not isinstance(default, bool):
                raise ValueError(f"Config arg {key!r} needs a value ({key}=...). Received: arg={arg!r}")
            parsed[key] = True
        elif isinstance(default, bool):
            if value.lower() not in _TRUE + _FALSE:
                raise ValueError(f"Config arg {key!r} must be one of {list(_TRUE + _FALSE)}. Received: {key}={value!r}")
            parsed[key] = value.lower() in _TRUE
        else:
            try:
                parsed[key] = type(default)(value)
            except ValueError as error:
                raise ValueError(
                    f"Config arg {key!r} must be a {type(default).__name__}. Received: {key}={value!r}"
                ) from error
    return ml_collections.ConfigDict(parsed)


def jit_compile_field(value):
    """`train.jit_compile` as a field that `--config.train.jit_compile=` may set to `true`, `false` or `auto`.

    A plain bool field would be parsed as a bool flag (refusing `auto`), a plain
    str one would keep `true` a string; an `object`-typed reference is parsed
    as a literal, so each value arrives as the trainer expects it.

    Args:
        value: True, False or "auto".

    Returns:
        An `ml_collections.FieldReference` of type `object`.
    """
    return config_dict.FieldReference(value, field_type=object)
