"""HTTP routes: health and info, sync sessions and epochs, and the generic entity router."""
