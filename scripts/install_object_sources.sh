#!/usr/bin/env bash
# Install the real-object source packages that mmapp.data.objects reads (docs/objects.md):
#   - Debian tuxpaint-stamps-default (GPL-2) -> /usr/share/tuxpaint/stamps
#   - npm @lobehub/fluent-emoji-3d 1.1.0 (MIT) -> ~/.cache/mmapp/fluent-emoji-3d/package/assets
#   - Debian fonts-noto-color-emoji (images Apache-2.0), its bitmaps written out as PNGs -> ~/.cache/mmapp/noto-emoji
#   - npm @twemoji/svg 15.0.0 (graphics CC-BY 4.0), rasterised to 256 px PNGs (Debian librsvg2-bin)
#     -> ~/.cache/mmapp/twemoji
# Idempotent: what is already there is left alone. Needs apt-get (root or sudo), npm and the
# project's Python (PY, default .venv/bin/python, for fontTools).
set -euo pipefail

EMOJI_VERSION=1.1.0
EMOJI_SHA1=ff0679b2bbbf6100dd9709d8952498f08f364ac6
EMOJI_ROOT="${MMAPP_EMOJI_ROOT:-$HOME/.cache/mmapp/fluent-emoji-3d}"
TUXPAINT_DIR=/usr/share/tuxpaint/stamps
TWEMOJI_VERSION=15.0.0
TWEMOJI_SHA1=0e3828c654726f1848fe11f31ef4e8a75854cc7f
NOTO_DIR="${MMAPP_NOTO_DIR:-$HOME/.cache/mmapp/noto-emoji}"
TWEMOJI_DIR="${MMAPP_TWEMOJI_DIR:-$HOME/.cache/mmapp/twemoji}"
NOTO_FONT=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
test -x "$PY" || PY=python3
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
apt_install() {  # apt_install PACKAGE...: install what is missing
    if ! apt-cache show "$@" >/dev/null 2>&1; then
        $SUDO apt-get update
    fi
    $SUDO apt-get install -y --no-install-recommends "$@"
}

if [ -d "$TUXPAINT_DIR/animals" ]; then
    echo "tuxpaint-stamps-default: already installed in $TUXPAINT_DIR"
else
    apt_install tuxpaint-stamps-default
    echo "tuxpaint-stamps-default: installed in $TUXPAINT_DIR"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
npm_unpack() {  # npm_unpack NAME VERSION SHA1 DIR: npm pack NAME@VERSION, check its sha1, untar it into DIR
    if ! command -v npm >/dev/null; then
        echo "npm not found: install Node.js and npm (sudo apt-get install npm), then rerun" >&2
        exit 1
    fi
    local tarball got
    tarball="$WORK/$(cd "$WORK" && npm pack --silent "$1@$2" | tail -1)"
    got="$(sha1sum "$tarball" | cut -d' ' -f1)"
    if [ "$got" != "$3" ]; then
        echo "$1 tarball sha1 $got, expected $3: refusing it" >&2
        exit 1
    fi
    mkdir -p "$4"
    tar -xzf "$tarball" -C "$4"
}

if [ -n "$(ls "$EMOJI_ROOT/package/assets/"*.webp 2>/dev/null | head -1)" ]; then
    echo "@lobehub/fluent-emoji-3d: already in $EMOJI_ROOT/package/assets"
else
    npm_unpack @lobehub/fluent-emoji-3d "$EMOJI_VERSION" "$EMOJI_SHA1" "$EMOJI_ROOT"
    echo "@lobehub/fluent-emoji-3d $EMOJI_VERSION: unpacked in $EMOJI_ROOT/package/assets" \
         "($(ls "$EMOJI_ROOT/package/assets" | wc -l) files)"
fi

if [ -n "$(ls "$NOTO_DIR/"*.png 2>/dev/null | head -1)" ]; then
    echo "Noto emoji: already in $NOTO_DIR"
else
    test -f "$NOTO_FONT" || apt_install fonts-noto-color-emoji
    "$PY" scripts/extract_emoji_images.py noto --font "$NOTO_FONT" --out "$NOTO_DIR"
fi

if [ -n "$(ls "$TWEMOJI_DIR/"*.png 2>/dev/null | head -1)" ]; then
    echo "Twemoji: already in $TWEMOJI_DIR"
else
    command -v rsvg-convert >/dev/null || apt_install librsvg2-bin
    npm_unpack @twemoji/svg "$TWEMOJI_VERSION" "$TWEMOJI_SHA1" "$WORK/twemoji"
    "$PY" scripts/extract_emoji_images.py twemoji --svg-dir "$WORK/twemoji/package" --out "$TWEMOJI_DIR"
fi
