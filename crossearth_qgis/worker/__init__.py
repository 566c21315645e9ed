"""Talking to the engine worker: its command lines, the process and its protocol, the warm
worker kept between runs, the QgsTask that runs a job, and the engine's errors in plain words."""
