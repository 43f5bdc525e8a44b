#!/usr/bin/env bash
# Install the real-object source packages that mmapp.data.objects reads (docs/objects.md):
#   - Debian tuxpaint-stamps-default (GPL-2) -> /usr/share/tuxpaint/stamps
#   - npm @lobehub/fluent-emoji-3d 1.1.0 (MIT) -> ~/.cache/mmapp/fluent-emoji-3d/package/assets
# Idempotent: what is already there is left alone. Needs apt-get (root or sudo) and npm.
set -euo pipefail

EMOJI_VERSION=1.1.0
EMOJI_SHA1=ff0679b2bbbf6100dd9709d8952498f08f364ac6
EMOJI_ROOT="${MMAPP_EMOJI_ROOT:-$HOME/.cache/mmapp/fluent-emoji-3d}"
TUXPAINT_DIR=/usr/share/tuxpaint/stamps

if [ -d "$TUXPAINT_DIR/animals" ]; then
    echo "tuxpaint-stamps-default: already installed in $TUXPAINT_DIR"
else
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    if ! apt-cache show tuxpaint-stamps-default >/dev/null 2>&1; then
        $SUDO apt-get update
    fi
    $SUDO apt-get install -y tuxpaint-stamps-default
    echo "tuxpaint-stamps-default: installed in $TUXPAINT_DIR"
fi

if [ -n "$(ls "$EMOJI_ROOT/package/assets/"*.webp 2>/dev/null | head -1)" ]; then
    echo "@lobehub/fluent-emoji-3d: already in $EMOJI_ROOT/package/assets"
else
    if ! command -v npm >/dev/null; then
        echo "npm not found: install Node.js and npm (sudo apt-get install npm), then rerun" >&2
        exit 1
    fi
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "@lobehub/fluent-emoji-3d@$EMOJI_VERSION" >/dev/null)
    tarball="$work/lobehub-fluent-emoji-3d-$EMOJI_VERSION.tgz"
    got="$(sha1sum "$tarball" | cut -d' ' -f1)"
    if [ "$got" != "$EMOJI_SHA1" ]; then
        echo "fluent-emoji-3d tarball sha1 $got, expected $EMOJI_SHA1: refusing it" >&2
        exit 1
    fi
    mkdir -p "$EMOJI_ROOT"
    tar -xzf "$tarball" -C "$EMOJI_ROOT"
    echo "@lobehub/fluent-emoji-3d $EMOJI_VERSION: unpacked in $EMOJI_ROOT/package/assets" \
         "($(ls "$EMOJI_ROOT/package/assets" | wc -l) files)"
fi
