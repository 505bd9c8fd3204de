"""PyTorch reference implementations, used only to check the JAX packages (never imported by them).

``python -m reference.torch_train <flags of python -m train>``: the same training run with
transformers + ``torch.optim.AdamW`` + ``torch.optim.lr_scheduler`` (see ``docs/alignment.md``).
"""
