#!/usr/bin/env bash
# Install the system package whose photographs datasets/real_photos/photos.json also lists:
#   - Debian gcompris-qt-data (GCompris's activity data; the categorization activity's photographs
#     of tools, household things, fish, monuments and power plants, each public domain or CC0 per the
#     README beside it) -> /usr/share/gcompris-qt/rcc/categorization.rcc
# The scikit-image, matplotlib and gradio photos come with the Python dependencies. Idempotent;
# needs apt-get (root or sudo). Without it, scripts/real_photos.py skips those photos and says so.
set -euo pipefail

BUNDLE=/usr/share/gcompris-qt/rcc/categorization.rcc
if [ -f "$BUNDLE" ]; then
    echo "gcompris-qt-data: already installed ($BUNDLE)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
if ! apt-cache show gcompris-qt-data >/dev/null 2>&1; then
    $SUDO apt-get update
fi
$SUDO apt-get install -y --no-install-recommends gcompris-qt-data
echo "gcompris-qt-data: installed ($BUNDLE)"
