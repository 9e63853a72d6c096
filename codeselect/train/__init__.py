"""Supervised fine-tuning with Lightning: data (pad/pack), module, strategies, HF export, the job."""
