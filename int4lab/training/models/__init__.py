"""The two small transformers the course trains: a character-level GPT and an 8x8-image ViT.

Both keep every matmul that the paper quantizes in a plain nn.Linear (so quantize_model can swap
it for Int4Linear) and everything the paper keeps in full precision (embeddings, LayerNorm,
softmax, the attention matmuls, the output head) outside of one.
"""
from int4lab.training.models.gpt import GPT, GPTConfig
from int4lab.training.models.vit import ViT, ViTConfig

__all__ = ["GPT", "GPTConfig", "ViT", "ViTConfig"]
