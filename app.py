"""Serve the mmapp web app: ``python app.py [--port 7860] [--captioner CKPT] [--vqa CKPT] ...``.

Same as ``mmapp app``; nothing is loaded until it runs as a script.
"""

import sys

if __name__ == "__main__":
    from mmapp.cli import main

    raise SystemExit(main(["app", *sys.argv[1:]]))
