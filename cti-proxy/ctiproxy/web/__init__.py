"""ctispy's web view (--web): the store of what the tool saw (store.py) and the HTTP server (server.py)."""

DEFAULT_PORT = 8030
