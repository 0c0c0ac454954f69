r"""Parameterisations of the token embedding ("kinds") as plug-ins, behind one interface.

Shapes: B batch, L length, D model width (`model.model_dim`), V vocabulary.

A kind is one module of this package, `factorized/embeddings/<kind>.py`: its maths and
initialisation (the module docstring), its `nnx.Module`, and a `KindConfig` subclass
(base.py) registered with `@register`, which validates the kind's config fields (rank
limits and its own `model.embed.*` fields, declared in `fields`), counts its parameters and
FLOPs, and builds the module from plain numbers. Every module of this package is imported
here, so adding a kind is adding its file (and its tests) and its line below;
`KINDS` lists the registered kinds in table order, for the sweep config, benchmarks, plots
and reports (tests/test_docs.py checks the lines below, README.md's and docs/kinds.md's
tables against it).

  dense     W: VxD                                          dense.py
  albert    A: VxE, P: ExD, b: D (ALBERT, Lan et al. 2020)   albert.py
  svd       U: VxR, s: R, V: RxD                             svd.py
  adaptive  per frequency band b: A_b: V_b x W_b, P_b: W_b x D
            (adaptive input, Baevski & Auli 2019)             adaptive.py
  tt        TT cores G_k: r x v_k x d_k x r, V <= prod v_k, D = prod d_k
            (tensor-train embedding, Hrinchuk et al. 2020)    tt.py
  dpq       codes: VxG in [0, K), values: KxD (trained through Q: VxD, keys: KxD;
            differentiable product quantization, Chen et al. 2020)  dpq.py

The interface: `__call__(ids_BxL) -> x_BxLxD` (compute dtype) and, for the tied output
head, `attend(x_BxLxD) -> logits_BxLxV` (float32); `penalty()`, a float32 regulariser added
to the loss (0 for all but svd with `ortho_penalty`); `factors()`, matrices whose product is
the VxD table, read for its spectrum (spectrum.py), as small as the structure allows.
The factorized kinds never build the VxD table, forward or backward, but dpq, whose tied
head is the VxD table of codebook rows that its codes select.

Quantization (quantize.py, `model.embed.quant_bits`): the matrices among a module's
`TABLE_PARAMS` become integers and scales, after training or, fake-quantized in the forward
pass, during it; the kind's config gives their shapes (`table_shapes`) for the bytes a run
reports.

Initialisation, every kind (sigma^2 = 1/D): the lookup has per-coordinate variance sigma^2
and, for unit-variance x (the final LayerNorm's output), the tied logits have variance
D sigma^2 = 1, at every rank. The untied head (model/transformer.py's UntiedHead) is a DxV
matrix ~ N(0, 1/D): the same logit scale. The model scales x by 0.02 sqrt(D) before the
blocks (model/transformer.py says why).

Weight decay (train/optim.py, `train.embed_decay`): each module names its table's parameters
(`TABLE_PARAMS`: attribute names, or (attribute, index) paths into an nnx.List) and the
ones whose decoupled decay shrinks the whole table by the same factor (1 - lr wd) as decay
shrinks a dense W (`TABLE_DECAY`). Parameters a tied head adds (ALBERT's MLM head) are not
the table's and follow train/optim.py's general rule.

A module whose tied logits are `project_to_vocab(x, T)` with T (VxD) its only parameter
may name T in `LOGITS_TABLE` (dense does): the chunked loss then walks the vocabulary in
slices and holds T's gradient once (factorized/model/loss.py).

A module whose head computes its logits in parts (tt: slices of the table; adaptive:
frequency bands) may define `attend_parts(x_BxLxD) -> [logits_BxLxV_p, ...]`, consecutive
ranges of a vocabulary order of its own, and, where that order is not the ids' order,
`ordered_ids(ids) -> positions` of the ids in it. The loss then takes the log-sum-exp over
the parts and the target's logit from its part (model/loss.py's `parts_nll`): the same NLL,
without concatenating the parts into BxLxV logits or putting them back in id order (a
gather, and a scatter in the backward pass), which would cost more than the head itself.
"""

from __future__ import annotations

from factorized import plugins
from factorized.embeddings.base import (
  DTYPES,
  HEADS,
  KindConfig,
  check_choices,
  compute_dtype,
  config_fields,
  embed_config,
  head_config,
  kind,
  kind_names,
  project_to_vocab,
  ranked,
  register,
)

# Each kind registers itself.
plugins.import_all(__name__, __path__, skip=('base', 'quantize', 'spectrum'))

KINDS = kind_names()

__all__ = ['DTYPES', 'HEADS', 'KINDS', 'KindConfig', 'check_choices', 'compute_dtype',
           'config_fields', 'embed_config', 'head_config', 'kind', 'kind_names',
           'project_to_vocab', 'ranked', 'register']
