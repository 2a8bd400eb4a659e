"""workbench: architecture ablations and NAS studies for mobile hybrid CNN/ViT models (MobileViT v1/v2/v3)."""

__version__ = "0.1.0"
