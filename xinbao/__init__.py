"""Xinbao: glue shared by cloud and edge (CLI entry point, MQTT contract, code scheme)."""

__version__ = "0.1.0"
