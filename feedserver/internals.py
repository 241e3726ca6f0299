"""The error raised when python-socketio or aiohttp no longer work as feedserver relies on.

Two modules reach past a library's public API, each checked when the server is built:
`socketio_internals.check_internals()` and `engineio.handover.check_internals()`.
"""


class InternalsChanged(RuntimeError):
    """The installed python-socketio / aiohttp no longer match what we rely on."""
