"""Pictures: the world grid, the feature gallery and the feature browser."""
