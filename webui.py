"""Start the Z-Image-Turbo web UI: `python webui.py [--demo] [--preload] [--port 7860] ...`."""
import sys

from zimage.cli import serve_main

if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:]))
