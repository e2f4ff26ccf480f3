"""The ASGI entry point for `uvicorn gateway.asgi:app` (several workers import it by name)."""

from gateway.app import create_app

app = create_app()
