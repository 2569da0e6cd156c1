"""hubctl: host tools for hemhub hubs (virtual and real)."""

__version__ = "0.1.0"
