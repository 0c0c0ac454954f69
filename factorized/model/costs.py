"""Parameter counts, bytes of the vocabulary tables and FLOPs per token, from a run's
ModelArgs alone (no model build).

Shapes: V vocabulary, D model width, M MLP width, L sequence length (`data.seq_len`),
N layers. The embedding's own terms come from its kind (`param_counts` and
`flops_per_token` of its config class, factorized/embeddings/<kind>.py, where each kind
states its formulas); this file adds the head and the blocks.

Parameter counts, split as training logs and summary.json report them:
  embedding    the input embedding's own parameters (the kind's `embedding`);
  output_head  only what the head adds beyond them: untied D V (no bias); tied, what the
               kind's head adds (its `tied_head`: ALBERT's MLM head, 0 for the others);
  blocks       N (2 D + 3 D^2 + 3 D + D^2 + D + 2 D + 2 D M + M + D);
  non_embedding = total - embedding - output_head
               = blocks + final LayerNorm (2 D) + learned positions (L D);
  vocab        embedding + output_head: every parameter whose existence or size depends
               on the embedding choice (kind, rank, head). Kinds are compared on this
               budget: it counts ALBERT's MLM head, whose V-sized output bias is a
               unigram prior the other kinds lack, and an untied head's D V.
  training_only  parameters trained but not stored after training, in none of the above
               (dpq's query table and keys: the training memory its codes are learned
               through); 0 for every other kind.

Bytes of the vocabulary tables as stored (`vocab_bytes`: embedding, output_head, vocab, the
same split): float32, 4 per parameter, but with `model.embed.quant_bits` = b each table
matrix (the shapes of the kind's `table_shapes`, and of an untied head) is b-bit integers,
packed (int4: half a byte a value), plus a float32 scale per row or per
`model.embed.quant_group` columns (factorized/embeddings/quantize.py, `array_bytes`); vectors
and a head's other parameters stay float32. A kind that stores integer codes beside its
tables (dpq) adds their packed bytes (its `code_bytes`).

FLOPs convention: forward pass, per token, 2 FLOPs per multiply-add, matrix
products only (gathers, norms, softmax, activations, biases and residual adds
are not counted; they are O(D) per token). Attention counts Q K^T and A V over
the full context L (4 L D per layer), as Kaplan et al. 2020 and PaLM do, which is
also what the XLA attention kernel computes despite the causal mask. A training
step costs about 3x the forward FLOPs (backward = 2x forward). Work done once per step
whatever the batch (tt merges its cores into two blocks) is not per token and not counted.
  embedding    the kind's lookup (dense 0, a gather);
  output_head  untied 2 D V; tied, the kind's `attend` (dense 2 D V);
  blocks       N (2 D 3D + 2 D D + 4 L D + 4 D M).
"""

from __future__ import annotations

import math

from factorized.embeddings import quantize
from factorized.model.transformer import ModelArgs


def param_counts(args: ModelArgs) -> dict[str, int]:
  """Parameters per component: embedding, output_head, vocab, blocks, non_embedding, total,
  and training_only (see the module docstring)."""
  dim, mlp_dim, vocab = args.model_dim, args.mlp_dim, args.vocab_size
  kind = args.embed.param_counts()
  embedding = kind['embedding']
  if args.head is not None:  # an untied head of its own kind: every parameter it holds
    output_head = sum(args.head.param_counts().values())
  else:
    output_head = kind['tied_head'] if args.embed.tied else dim * vocab
  per_block = (2 * dim                        # attention LayerNorm
               + dim * 3 * dim + 3 * dim      # fused QKV
               + dim * dim + dim              # attention output
               + 2 * dim                      # MLP LayerNorm
               + dim * mlp_dim + mlp_dim      # MLP in
               + mlp_dim * dim + dim)         # MLP out
  blocks = args.num_layers * per_block
  positions = args.max_len * dim if args.positions == 'learned' else 0
  non_embedding = blocks + 2 * dim + positions
  training_only = args.embed.training_params() + (
      args.head.training_params() if args.head is not None else 0)
  return {'embedding': embedding, 'output_head': output_head,
          'vocab': embedding + output_head, 'blocks': blocks,
          'non_embedding': non_embedding, 'total': embedding + output_head + non_embedding,
          'training_only': training_only}


def vocab_bytes(args: ModelArgs) -> dict[str, int]:
  """Bytes of the vocabulary tables as stored (see the module docstring): embedding,
  output_head and vocab, their sum; 4 per parameter at model.embed.quant_bits = 0."""
  counts, shapes = param_counts(args), args.table_shapes()

  def stored(part: str, params: int, codes: int) -> int:
    tables = [shape for path, shape in shapes.items() if path[0] == part]
    rest = params - sum(math.prod(shape) for shape in tables)  # float32: vectors, MLM head
    return (sum(quantize.array_bytes(shape, args.quant_bits, args.quant_group)
                for shape in tables) + quantize.FLOAT_BYTES * rest + codes)

  embedding = stored('embed', counts['embedding'], args.embed.code_bytes())
  output_head = stored('head', counts['output_head'],
                       args.head.code_bytes() if args.head is not None else 0)
  return {'embedding': embedding, 'output_head': output_head, 'vocab': embedding + output_head}


def flops_per_token(args: ModelArgs) -> dict[str, int]:
  """Forward matmul FLOPs per token (2 per multiply-add): embedding, output_head, blocks, total."""
  dim, mlp_dim, length = args.model_dim, args.mlp_dim, args.max_len
  kind = args.embed.flops_per_token()
  embedding = kind['embedding']
  if args.head is not None:  # an untied head of its own kind: its attend
    output_head = args.head.flops_per_token()['tied_head']
  else:
    output_head = kind['tied_head'] if args.embed.tied else 2 * dim * args.vocab_size
  per_block = (2 * dim * 3 * dim              # fused QKV
               + 2 * dim * dim                # attention output
               + 2 * 2 * length * dim         # Q K^T and A V over the context
               + 2 * 2 * dim * mlp_dim)       # MLP in and out
  blocks = args.num_layers * per_block
  return {'embedding': embedding, 'output_head': output_head, 'blocks': blocks,
          'total': embedding + output_head + blocks}
