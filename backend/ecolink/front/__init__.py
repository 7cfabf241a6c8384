"""The HTTP front: the process that owns the listening socket.

Service-URL requests (`/gpu-clusters/{id}/service/...`) are authenticated from an
in-memory table, routed by cluster and forwarded to the replicas over pooled
keep-alive connections (asyncio protocols on uvloop, httptools on both sides);
every other request goes, unchanged, to the API application served on a private
unix socket. See `server.py` for how the processes fit together.
"""

from ecolink.front import compiled as _compiled

# The request path's modules compiled by mypyc, where a build of these sources exists
# (see `compiled`); before any of them is imported.
_compiled.activate(__path__)
