"""A small Vision Transformer for 8x8 grey-scale digits.

Quantized by quantize_model: attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj (every block).
Full precision: the patch embedding (a Conv2d, the image analogue of a token embedding; its
reduction dim patch*patch = 4 is far below a Hadamard block anyway), cls token, position
embedding, LayerNorm, attention matmuls and softmax, and the classifier `head`.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from int4lab.training.models.gpt import Block


@dataclass
class ViTConfig:
    image_size: int = 8
    patch_size: int = 2     # 8x8 image -> 16 patches of 2x2 pixels, plus one cls token
    in_chans: int = 1
    n_classes: int = 10
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64        # a multiple of 32 (the Hadamard block)
    dropout: float = 0.0


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        self.config = cfg
        n_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.patch_embed = nn.Conv2d(cfg.in_chans, cfg.n_embd, cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.n_embd))
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches + 1, cfg.n_embd) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg, causal=False) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.n_classes)  # the classifier: stays full precision

    def forward(self, x, targets=None):
        """x: (B, C, H, W) float images. Returns logits (B, n_classes) and the mean
        cross-entropy when targets (B,) are given, else None."""
        if x.dim() != 4 or x.shape[1:] != (self.config.in_chans, self.config.image_size, self.config.image_size):
            raise ValueError(f"expected images (B, {self.config.in_chans}, {self.config.image_size}, "
                             f"{self.config.image_size}), got {tuple(x.shape)}")
        x = self.patch_embed(x).flatten(2).transpose(1, 2)          # (B, n_patches, C)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x[:, 0]))                       # classify from the cls token
        loss = F.cross_entropy(logits, targets) if targets is not None else None
        return logits, loss
