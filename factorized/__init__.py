"""factorized: embedding-layer parameter factorization in Transformer LMs.

Pipeline: configs/*.py (ml_collections) -> data.py (corpus, tokenizer, batches)
-> embeddings/ (one file per kind) + model.py (Flax NNX) -> trainer.py (pure jitted step,
data-parallel over a ('data',) mesh) -> evaluate.py (exact token-weighted NLL)
-> TensorBoard events, orbax checkpoints and summary.json per run -> sweep_report.py,
results.py, spectrum.py, interpret.py, plots.py (tables, notebooks).
"""
