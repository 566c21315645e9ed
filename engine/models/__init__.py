"""Model packages and what knows about them: the card, the architecture registry, loading,
the catalog of released checkpoints and their download, ONNX export, fit to a raster, and the
models a warm worker keeps loaded."""
