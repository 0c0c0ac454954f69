"""factorized: embedding-layer parameter factorization in Transformer LMs.

Pipeline: configs/*.py (ml_collections) -> config/build.py (one frozen, validated Spec) ->
data/ (corpus, tokenizer, batches) -> embeddings/ (one file per kind) + model/ (Flax NNX LM,
loss, costs) -> train/ (pure jitted step, data-parallel over a ('data',) mesh; exact
evaluation; TensorBoard events, orbax checkpoints, summary.json) -> sweeps/ (points, local or
SLURM) -> analysis/ (the sweep's table and reports, plots, findings, notebook helpers).
"""
