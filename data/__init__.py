"""medsynth data layer: volumes and slides by modality, intensity windows, one loading rule, phantoms, writers.

* :mod:`data.files`: atomic writes, hashing, JSON, the overwrite policy (a leaf anyone may import).
* :mod:`data.intensity`: modality windows to [-1, 1] and back, exactly (a leaf anyone may import).
* :mod:`data.errors`, :mod:`data.splits`, :mod:`data.masks`: errors naming the file, unit-level splits, body masks.
* :mod:`data.loading`: the one seeded, resumable, rank-sharding sampler and loader of every datamodule.
* :mod:`data.volumes`: NIfTI/DICOM/cache reading, volume datasets, augmentation, datamodule, volume writers.
* :mod:`data.slides`: whole-slide images, tissue, tile grids, regions, tile datasets, datamodule, phantom slides.
* :mod:`data.provenance`: manifests and PNGs with their provenance; :mod:`data.phantoms`, :mod:`data.preview`:
  the synthetic demo data set and its preview figures.

This package never imports :mod:`gan`; models never import its datamodules (the CLI wires the two together).
"""
