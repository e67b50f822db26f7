"""Start the Z-Image-Turbo web UI: `python webui.py [--demo] [--preload] [--port 7860] ...`."""
import sys

from zimage.cli import webui_entry

if __name__ == "__main__":
    sys.exit(webui_entry())
