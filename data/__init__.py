"""medsynth data layer: volumes, intensity windows, slides and tiles, phantoms, writers, datamodules.

This package never imports :mod:`gan`; models never import it (the CLI wires the two together).
"""
