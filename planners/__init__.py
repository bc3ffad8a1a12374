"""Optimizers over action sequences and designs; they see only the core's interfaces."""
