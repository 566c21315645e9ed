"""Rasters and vectors on disk: reading source windows for a model, streaming class rasters
out, virtual rasters, extents, the minimum region filter and polygons."""
