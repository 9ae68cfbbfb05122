"""actors: the distributed plumbing of selfevo (Ray, torch, transformers, DeepSpeed, vLLM).

Everything that needs the heavy stack lives here, so that ``selfevo`` stays importable
without it. vLLM is optional and only imported behind a guard.
"""
