"""Parameter counts and FLOPs per token, from a config alone (no model build).

Shapes: V vocabulary, D model width, E ALBERT width, R SVD rank (both
`model.embed.rank`), M MLP width, L sequence length (`data.seq_len`), N layers.

Parameter counts, split as training logs and summary.json report them:
  embedding    the input embedding's own parameters:
               dense V D | albert V E + E D + D (A, P, bias) | svd V R + R + R D;
  output_head  only what the head adds beyond them: untied D V (no bias);
               tied dense, tied svd and ALBERT's transpose head 0; ALBERT's MLM
               head D E + E (dense) + 2 E (LayerNorm) + V (output bias);
  blocks       N (2 D + 3 D^2 + 3 D + D^2 + D + 2 D + 2 D M + M + D);
  non_embedding = total - embedding - output_head
               = blocks + final LayerNorm (2 D) + learned positions (L D);
  vocab        embedding + output_head: every parameter whose existence or size depends
               on the embedding choice (kind, rank, head). Kinds are compared on this
               budget: it counts ALBERT's MLM head, whose V-sized output bias is a
               unigram prior the other kinds lack, and an untied head's D V.

FLOPs convention: forward pass, per token, 2 FLOPs per multiply-add, matrix
products only (gathers, norms, softmax, activations, biases and residual adds
are not counted; they are O(D) per token). Attention counts Q K^T and A V over
the full context L (4 L D per layer), as Kaplan et al. 2020 and PaLM do, which is
also what the XLA attention kernel computes despite the causal mask. A training
step costs about 3x the forward FLOPs (backward = 2x forward).
  embedding    dense 0 (a gather) | albert 2 E D | svd 2 R D;
  output_head  tied dense / untied 2 D V | svd 2 D R + 2 R V |
               albert 2 D E + 2 E V (either head);
  blocks       N (2 D 3D + 2 D D + 4 L D + 4 D M).
"""

from __future__ import annotations

import ml_collections

from factorized.embeddings import validate_model_config


def _shapes(config: ml_collections.ConfigDict, vocab_size: int) -> tuple:
  model = config.model
  validate_model_config(model, vocab_size)
  return (model.embed.kind, model.embed.head, model.embed.albert_head, model.embed.rank,
          model.model_dim, model.mlp_dim, model.num_layers)


def param_counts(config: ml_collections.ConfigDict, vocab_size: int) -> dict[str, int]:
  """Parameters per component: embedding, output_head, vocab, blocks, non_embedding, total."""
  kind, head, albert_head, rank, dim, mlp_dim, num_layers = _shapes(config, vocab_size)
  vocab = vocab_size
  embedding = {'dense': vocab * dim,
               'albert': vocab * rank + rank * dim + dim,
               'svd': vocab * rank + rank + rank * dim}[kind]
  if head == 'untied':
    output_head = dim * vocab
  elif kind == 'albert' and albert_head == 'mlm':
    output_head = dim * rank + rank + 2 * rank + vocab
  else:
    output_head = 0
  per_block = (2 * dim                        # attention LayerNorm
               + dim * 3 * dim + 3 * dim      # fused QKV
               + dim * dim + dim              # attention output
               + 2 * dim                      # MLP LayerNorm
               + dim * mlp_dim + mlp_dim      # MLP in
               + mlp_dim * dim + dim)         # MLP out
  blocks = num_layers * per_block
  positions = config.data.seq_len * dim if config.model.positions == 'learned' else 0
  non_embedding = blocks + 2 * dim + positions
  return {'embedding': embedding, 'output_head': output_head,
          'vocab': embedding + output_head, 'blocks': blocks,
          'non_embedding': non_embedding, 'total': embedding + output_head + non_embedding}


def flops_per_token(config: ml_collections.ConfigDict, vocab_size: int) -> dict[str, int]:
  """Forward matmul FLOPs per token (2 per multiply-add): embedding, output_head, blocks, total."""
  kind, head, _, rank, dim, mlp_dim, num_layers = _shapes(config, vocab_size)
  vocab, length = vocab_size, config.data.seq_len
  embedding = {'dense': 0, 'albert': 2 * rank * dim, 'svd': 2 * rank * dim}[kind]
  if head == 'untied' or kind == 'dense':
    output_head = 2 * dim * vocab
  else:  # albert (MLM head's dense D->E, or x P^T) and svd: D->rank, then rank->V.
    output_head = 2 * dim * rank + 2 * rank * vocab
  per_block = (2 * dim * 3 * dim              # fused QKV
               + 2 * dim * dim                # attention output
               + 2 * 2 * length * dim         # Q K^T and A V over the context
               + 2 * 2 * dim * mlp_dim)       # MLP in and out
  blocks = num_layers * per_block
  return {'embedding': embedding, 'output_head': output_head, 'blocks': blocks,
          'total': embedding + output_head + blocks}
