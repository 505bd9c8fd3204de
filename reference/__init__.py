"""PyTorch reference implementations, used only to check the JAX packages (never imported by them).

``python -m reference.torch_train <flags of python -m train>``: the same training run with
transformers + ``torch.optim`` (``--optimizer``) + ``torch.optim.lr_scheduler``;
``torchrun --nproc-per-node=8 -m reference.torch_ddp <flags>``: the same as real
``DistributedDataParallel`` processes (see ``docs/alignment.md``).
"""
