"""QGIS layers in and out: checking and exporting what the analyst chose for the worker, and
styling the results."""
