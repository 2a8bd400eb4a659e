"""The model flow: spec (what a model is, as data) -> presets (the paper's 16 named specs) -> resolve (names,
files and overrides to a spec) -> blocks (the modules) -> model (`create_model`). Only blocks and model
import torch."""
