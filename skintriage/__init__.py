"""skin-triage's shared domain: settings, SQL models, the case service, the image store."""

__version__ = "0.1.0"
