"""selfevo: self-evolution of language models (SELF, I-SHEEP, mistake analysis) on Ray.

This package is the pure core: configs, the record contract, readers, prompt templates,
parsers and scoring. It imports no Ray, vLLM, DeepSpeed or torch, so it loads in a
fraction of a second and its logic is tested without a cluster. The distributed plumbing
(engine actors, the trainer, the coordinator) lives in the sibling package ``actors``.
"""

__version__ = "0.1.0"
