"""Example third-party medprobe plugin."""
