"""The web rooms: the page (page/), the HTTP APIs (http/) and what serves both."""
from .gradio_stubs import install as _skip_gradio_stub_rewrites

_skip_gradio_stub_rewrites()
