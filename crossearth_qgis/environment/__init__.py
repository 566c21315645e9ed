"""The engine environment: choosing a base Python, making and growing the venv (Light or Full),
what it can do, and the Options page that does all of it."""
