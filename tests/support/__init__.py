"""Helpers the tests (and scripts/screenshot.py) share: ``tiny`` random-weight checkpoints and scenes."""
