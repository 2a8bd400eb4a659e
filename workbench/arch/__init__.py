"""The model flow: spec (what a model is, as data) -> presets (the paper's 16 named specs) -> resolve (names,
files and overrides to a spec) -> tasks (a backbone spec with a DeepLabv3 or SSDLite head; the Tables 3-4
presets) -> blocks (the modules) -> heads, segmentation, detection (the task heads) -> model (`create_model`).
Only blocks, heads, segmentation, detection and model import torch."""
