"""Training PartGen's segmentation and completion networks (PartGen §3.2, §3.3), whose authors released
no weights.

- :mod:`.build_dataset`: ``python -m partgen_models.training.build_dataset SRC OUT`` turns a folder of
  part-structured GLB/glTF files into training shards (one safetensors file per object) + a manifest.
- :mod:`.train`: ``python -m partgen_models.training.train {segmentation,completion} CONFIG``, also
  under ``accelerate launch`` for many GPUs and nodes; checkpoints in the loaders' format.

Modules: :mod:`.shards` (the on-disk object format), :mod:`.data` (training samples from shards),
:mod:`.config` (the training configuration), :mod:`.unet` (widening Zero123++'s input, checkpoints),
:mod:`.trainer` (loss, steps, evaluation, the loop).
"""
