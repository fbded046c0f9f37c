"""ASGI glue: app loading, the HTTP cycle, lifespan, adapters, proxy headers."""
