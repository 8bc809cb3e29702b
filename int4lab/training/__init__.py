"""Training: the tiny GPT and ViT (models/), their offline datasets (data) and the loop and
`int4lab train` (loop)."""
