"""Test and demo helpers: the tiny random Z-Image pipeline (and later the fake ModelScope hub)."""
