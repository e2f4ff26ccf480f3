"""The ASGI entry point for `uvicorn gateway.asgi:app`: each of several workers imports it by name,
so each configures its own logging here (a worker process does not inherit the parent's)."""

from gateway.app import create_app
from providers.settings import Settings
from gateway.logs import setup_logging

settings = Settings.from_env()
setup_logging(settings.log_level, settings.secrets())
app = create_app(settings)
