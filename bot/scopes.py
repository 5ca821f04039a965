"""The Slack scopes widen-bot needs: which Web API method needs which bot scope.

manifest.yml declares exactly these; tests/test_manifest.py finds the Web API methods the code calls and
checks each is listed here, so a new call cannot ship without its scope. (This file is the declaration,
not a use: the test does not scan it.)
"""

from __future__ import annotations

METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.postMessage": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "chat.update": ("chat:write",),
    "users.info": ("users:read",),  # is the person a workspace admin or owner?
    "conversations.history": ("channels:history", "groups:history"),  # after a crash: posted already?
    "conversations.replies": ("channels:history", "groups:history"),  # ... and in a digest's thread?
    "apps.connections.open": (),  # Socket Mode; uses the app-level token (connections:write)
}
COMMAND_SCOPES: tuple[str, ...] = ("commands",)
