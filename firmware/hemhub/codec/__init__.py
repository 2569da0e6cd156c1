"""Pure codecs shared by the hub (MicroPython) and the host tools (CPython).

Every parser here is a function from bytes to a value. Bad input of any kind
raises CodecError (a ValueError) with a message naming the problem; nothing else
escapes a codec.
"""


class CodecError(ValueError):
    """Malformed, truncated or unsupported wire data."""
