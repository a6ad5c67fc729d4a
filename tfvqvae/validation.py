"""Argument checks shared by the layers and models, with errors that name the value."""


def positive_int(name, value, allow_none=False):
    """Returns ``value`` if it is a positive int (or None when allowed), else raises.

    Raises:
        ValueError: "`name` must be a positive integer. Received: name=value".
    """
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return value
