"""The app's tabs, one module each: its computation, its events and its layout."""
