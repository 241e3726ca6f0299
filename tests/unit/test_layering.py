"""Who may import what: the Engine.IO server is feedserver's own (nothing of python-engineio
is imported), and one module alone reaches into aiohttp's private modules."""

from __future__ import annotations

import ast
from pathlib import Path

import feedserver

PACKAGE = Path(feedserver.__file__).parent
AIOHTTP_PRIVATE = ("aiohttp._websocket", "aiohttp.web_protocol", "aiohttp.http_writer")


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def modules() -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_imports_python_engineio() -> None:
    offenders = {
        module: sorted(n for n in names if n == "engineio" or n.startswith("engineio."))
        for module, names in modules().items()
    }
    assert {m: n for m, n in offenders.items() if n} == {}


def test_only_the_handover_module_imports_aiohttps_private_modules() -> None:
    users = {
        module
        for module, names in modules().items()
        if any(n.startswith(AIOHTTP_PRIVATE) for n in names)
    }
    assert users == {"engineio/handover.py"}


def test_the_socketio_server_runs_on_feedservers_engine() -> None:
    from feedserver.engineio import EngineServer
    from feedserver.realtime import GatewayServer

    assert isinstance(GatewayServer(async_mode="aiohttp").eio, EngineServer)
