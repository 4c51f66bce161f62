"""How revelio stores things: atomic files, safetensors + JSON only, and folder-or-Hub resolution."""
