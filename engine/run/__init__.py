"""One segmentation job from start to finish: where it writes, the processing resolution, the
tile plan, runtimes and devices, the batches through the model, blending and the row stream,
and many rasters in one batch."""
