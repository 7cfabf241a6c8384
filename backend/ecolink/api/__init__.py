"""The HTTP and WebSocket API of ecolink (api.md): app factory, auth, routes, watch feed."""
