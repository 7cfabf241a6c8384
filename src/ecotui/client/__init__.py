"""The dashboard's way to a backend: REST (httpx) and WebSocket (watch, exec). No textual here."""
