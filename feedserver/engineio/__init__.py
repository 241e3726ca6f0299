"""feedserver's Engine.IO v4 server: the engine python-socketio runs on.

- `server`: `EngineServer`, the HTTP side (handshake, polling GET/POST, WebSocket
  accept, CORS) and the members python-socketio calls;
- `socket`: `EngineSocket`, one connection, the one owner of what is written to it;
- `websocket`: the protocol of a WebSocket once aiohttp has handed it over;
- `handover`: the one module that knows aiohttp's insides;
- `writes`, `heartbeat`: the loop-wide write scheduler and the shared ping timers;
- `packets`, `frames`: Engine.IO packets and RFC 6455 frames.
"""

from .server import EngineServer, EngineStats, Reason
from .socket import EngineSocket

__all__ = ["EngineServer", "EngineSocket", "EngineStats", "Reason"]
