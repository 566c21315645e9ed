"""The "Segment layer" dock: its form, the model and device lists, the area and processing
resolution, the model-fit advice, and running a job from it."""
