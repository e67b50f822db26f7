"""The page's CSS for issue 28's look: results shown whole with their captions under them, the
live preview at the result's size, Preload and Unload beside the status. Joined to ui_page's CSS
by page_assets()."""
from __future__ import annotations

LOOK_CSS = """
/* Results whole (object_fit contain on the Gallery), each caption under its image, not over it. */
#gallery .thumbnail-item { aspect-ratio: auto !important; height: auto !important; display: flex;
  flex-direction: column; }
#gallery .thumbnail-item img { object-fit: contain !important; width: 100%; height: auto !important;
  max-height: 70vh; }
#gallery .thumbnail-item .caption-label { position: static !important; max-width: 100% !important;
  white-space: normal !important; transform: none !important; background: none !important;
  color: var(--body-text-color) !important; margin: 4px 0 0 !important; padding: 0 4px !important;
  font-size: 0.85em; text-align: left; }
/* The live preview as wide as a result in the two-column gallery, in the result's proportions. */
#live-preview img.zi-live-image { width: calc(50% - var(--spacing-lg, 8px)); max-width: 100%; height: auto;
  max-height: 70vh; object-fit: contain; image-rendering: auto; }
/* Preload / Unload beside the status line. */
#model-buttons { gap: 4px !important; align-self: center; }
#model-buttons button { white-space: nowrap; }
#status-panel .zi-offline { color: var(--error-text-color, #b91c1c); }
@media (max-width: 767px) {
  #status-row { flex-wrap: wrap !important; }
  #model-buttons { display: grid !important; grid-template-columns: 1fr 1fr; min-width: 0 !important;
    flex: 1 1 100% !important; }
}
"""
