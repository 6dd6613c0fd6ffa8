"""From raw layers to training samples: transforms, knowledge, sites, windows, splits."""
