"""The error raised when python-socketio / engineio / aiohttp no longer match what we rely on.

`fanout`, `eio_transport` and `rooms` lean on library internals (pinned in pyproject.toml);
each has a `check_internals()` that raises this, naming what changed.
"""


class InternalsChanged(RuntimeError):
    """The installed python-socketio / engineio / aiohttp no longer match what we rely on."""
