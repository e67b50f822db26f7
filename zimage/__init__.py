"""zimage-webui: a local web app for Z-Image-Turbo that is ready in seconds and keeps one model copy."""
__version__ = "0.1.0"
