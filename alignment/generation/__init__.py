"""Generation (DESIGN.md section 4): every sampler's plan and its realisation.

    samplers.py  each sampler's spec (bandit/spec.py), its components, and generate_batch, which draws them
    decoding.py  batched sampling from one causal LM or a per-token fusion of several (one KV cache each)
    backend.py   the backend interface, the transformers backend, prompt encoding, model loading
    vllm.py      the vLLM backend (GPU nodes; imported only when chosen)
"""
