"""Real-object scenes: source packages and vocabulary (sources.py), real photos (real_photos.py)."""
