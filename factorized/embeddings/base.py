r"""What every embedding kind shares: its config class and registry, and the helpers.

Shapes: V vocabulary, D model width, K an inner width (a rank, a band's width).

A kind is a `KindConfig` subclass registered with `@register(name, ...)` (which makes it a
frozen dataclass): it holds the kind's arguments as plain numbers (the ConfigDict stops at
`embed_config`, which validates through the kind's `parse`), and owns what the rest of the
code asks of the kind: its parameter counts and FLOPs per token (`param_counts`,
`flops_per_token`: the input side and what its tied head adds), the shapes of its table's
parameters (`table_shapes`: what quantization stores, quantize.py), and `build`, which
makes its module. The module (an `nnx.Module`) implements
`__call__(ids_BxL) -> x_BxLxD`, `attend(x_BxLxD) -> logits_BxLxV`, `penalty()` and
`factors()`, and names its table's parameters in `TABLE_PARAMS` and `TABLE_DECAY`
(see the package docstring).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from factorized.embeddings import quantize
from factorized.spec import Spec

HEADS = ('tied', 'untied')
DTYPES = ('float32', 'bfloat16')
# model.embed.* fields of every kind: its table matrices quantized to quant_bits (0: float32),
# one scale per row or per quant_group columns (quantize.py).
SHARED_FIELDS = {'quant_bits': 0, 'quant_group': 0}
_REGISTRY: dict[str, type[KindConfig]] = {}


def is_int(value) -> bool:
  """True for Python and numpy integers, not for bools."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_rank(rank, kind: str, limit: int, what: str) -> int:
  """`model.embed.rank` as an int in [1, limit]; a ValueError naming `what` otherwise."""
  if not is_int(rank) or not 1 <= rank <= limit:
    raise ValueError(f'model.embed.rank={rank!r} is out of range for kind={kind!r}: '
                     f'it must be an integer in [1, {what}={limit}].')
  return int(rank)


def int_tuple(value, field: str, fix: str) -> tuple[int, ...]:
  """A config tuple (or list) of integers as a tuple; a ValueError naming `field` otherwise."""
  if not isinstance(value, (tuple, list)) or not all(is_int(v) for v in value):
    raise ValueError(f'model.embed.{field}={value!r} must be a tuple of integers; {fix}.')
  return tuple(int(v) for v in value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class KindConfig(abc.ABC):
  """An embedding kind's arguments, validated, and what the rest of the code asks of it."""

  name: ClassVar[str]  # model.embed.kind
  order: ClassVar[int]  # where the kind stands in tables and legends (lower first)
  rank_label: ClassVar[str]  # what model.embed.rank means ('' when the kind has none)
  fields: ClassVar[dict[str, Any]] = {}  # the kind's own model.embed.* fields and defaults
  module: ClassVar[type[nnx.Module]]  # what `build` makes (its TABLE_PARAMS, TABLE_DECAY)
  # How the trained tables are stored unquantized: 'float32', or 'codes' (integer codes with
  # float32 codebooks: dpq); the reports' precision column (analysis/table.py).
  storage: ClassVar[str] = 'float32'
  # Its own model.embed fields that set its size beside the rank (dpq's groups): part of a
  # point's identity in the reports, as the rank is, never a setting of the grid.
  size_fields: ClassVar[tuple[str, ...]] = ()

  vocab_size: int
  model_dim: int
  dtype: str  # the compute dtype's name
  tied: bool  # the output head is `attend` (else model/transformer.py's UntiedHead)
  lookup: bool = True  # False: an untied head's own instance, built for its `attend` alone

  @classmethod
  @abc.abstractmethod
  def parse(cls, embed: Spec, **common) -> KindConfig:
    """The kind's config from `model.embed` and the common fields; raises a ValueError
    naming the field when a value is out of range."""

  @abc.abstractmethod
  def param_counts(self) -> dict[str, int]:
    """{'embedding': the input side's parameters, 'tied_head': what the tied head adds}; an
    instance built as a head only (`lookup=False`) counts only what its `attend` uses."""

  def training_params(self) -> int:
    """Parameters trained but not stored after training (dpq's query table and keys), beyond
    `param_counts`; 0 for a kind that stores what it trains."""
    return 0

  def code_bytes(self) -> int:
    """Bytes of the integer codes the kind stores beside its tables (dpq), packed; 0 for
    a kind whose tables are all parameters."""
    return 0

  @abc.abstractmethod
  def flops_per_token(self) -> dict[str, int]:
    """Forward matmul FLOPs per token: {'embedding': the lookup, 'tied_head': `attend`}."""

  @abc.abstractmethod
  def table_shapes(self) -> dict[tuple, tuple[int, ...]]:
    """{path: shape} of the parameters the module's `TABLE_PARAMS` name, as `build` makes
    them (paths as in its Param state: ('U_VxR',), ('A_VbxWb', 0), ...)."""

  @abc.abstractmethod
  def build(self, rngs: nnx.Rngs, *, dense_table: jax.typing.ArrayLike | None = None,
            token_counts: np.ndarray | None = None) -> nnx.Module:
    """The module, its parameters drawn from `rngs` (or, where the kind allows it, from a
    dense VxD table); `token_counts` (train-split counts per id) for kinds that need them."""


def register(name: str, *, order: int, module: type[nnx.Module], rank_label: str = '',
             fields: dict[str, Any] | None = None):
  """Class decorator: makes a KindConfig subclass a frozen dataclass with these class
  attributes (see KindConfig) and adds it to the registry under `name`."""

  def add(cls: type[KindConfig]) -> type[KindConfig]:
    cls.name, cls.order, cls.module, cls.rank_label = name, order, module, rank_label
    cls.fields = dict(fields or {})
    if name in _REGISTRY:
      raise ValueError(f'Two embedding kinds are named {name!r}.')
    clash = set(cls.fields) & ({field for other in _REGISTRY.values() for field in other.fields}
                               | set(SHARED_FIELDS))
    if clash:
      raise ValueError(f'Embedding kind {name!r} declares model.embed fields {sorted(clash)} '
                       'that another kind declares already.')
    _REGISTRY[name] = dataclasses.dataclass(frozen=True, kw_only=True)(cls)
    return _REGISTRY[name]

  return add


def kind_names() -> tuple[str, ...]:
  """Every registered kind, in table order."""
  return tuple(sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].order, name)))


def kind(name: str) -> type[KindConfig]:
  """The config class of kind `name`; a ValueError naming model.embed.kind otherwise."""
  if name not in _REGISTRY:
    raise ValueError(f'model.embed.kind={name!r} is unknown; allowed: '
                     f'{"|".join(kind_names())}.')
  return _REGISTRY[name]


def ranked(name: str) -> bool:
  """Whether kind `name` reads model.embed.rank (dense does not)."""
  return bool(kind(name).rank_label)


def config_fields() -> dict[str, Any]:
  """Every kind's own model.embed.* fields and the shared ones (quantization) with their
  defaults (configs/lm.py adds them)."""
  return {**SHARED_FIELDS, **{field: default for name in kind_names()
                              for field, default in kind(name).fields.items()}}


def check_choices(model_config: Spec) -> type[KindConfig]:
  """The kind's config class; a ValueError naming model.embed.kind, model.embed.head,
  model.embed.head_kind, model.embed.head_rank, model.embed.quant_bits,
  model.embed.quant_group or model.dtype when one is not a valid choice (no vocabulary
  needed: runs before the data; ModelArgs checks that quant_group divides the tables)."""
  embed = model_config.embed
  config_class = kind(embed.kind)
  if embed.head not in HEADS:
    raise ValueError(f'model.embed.head={embed.head!r} is unknown; allowed: {"|".join(HEADS)}.')
  _check_head(embed)
  quantize.check_bits(embed.quant_bits, 'model.embed.quant_bits')
  quantize.check_group(embed.quant_group, 'model.embed.quant_group')
  if embed.quant_group and not embed.quant_bits:
    raise ValueError(f'model.embed.quant_group={embed.quant_group} needs quantized tables: set '
                     'model.embed.quant_bits=8 or 4, or quant_group=0.')
  if model_config.dtype not in DTYPES:
    raise ValueError(f'model.dtype={model_config.dtype!r} is unknown; allowed: '
                     f'{"|".join(DTYPES)}.')
  return config_class


def _check_head(embed: Spec) -> None:
  """A ValueError naming model.embed.head_kind or head_rank unless they make a head."""
  if embed.head_kind not in _REGISTRY:
    raise ValueError(f'model.embed.head_kind={embed.head_kind!r} is unknown; allowed: '
                     f'{"|".join(kind_names())}.')
  if not is_int(embed.head_rank) or embed.head_rank < 0:
    raise ValueError(f'model.embed.head_rank={embed.head_rank!r} must be an integer >= 0 '
                     '(0: model.embed.rank).')
  if embed.head_kind == 'dense' and embed.head_rank:
    raise ValueError(f'model.embed.head_rank={embed.head_rank}: the dense head has no rank; '
                     'set model.embed.head_kind to a factorized kind, or head_rank=0.')
  if embed.head == 'tied' and embed.head_kind != 'dense':
    raise ValueError(f'model.embed.head_kind={embed.head_kind!r} needs model.embed.head=untied '
                     '(a tied head is the input\'s own table).')


def head_config(model_config: Spec, vocab_size: int) -> KindConfig | None:
  """The untied head's own kind config: model.embed.head_kind at head_rank (0: the input's
  rank), with the input's kind fields, built as a tied instance of that kind that holds only
  what its `attend` uses (`lookup=False`: its `attend` is the head); None for a tied head or
  the untied dense DxV matrix (model/transformer.py)."""
  embed = model_config.embed
  _check_head(embed)
  if embed.head == 'tied' or embed.head_kind == 'dense':
    return None
  rank = embed.head_rank or embed.rank
  values = {**{key: embed[key] for key in embed.keys()}, 'kind': embed.head_kind, 'rank': rank,
            'head': 'tied'}
  try:
    return kind(embed.head_kind).parse(
        Spec(values), vocab_size=int(vocab_size), model_dim=int(model_config.model_dim),
        dtype=model_config.dtype, tied=True, lookup=False)
  except ValueError as error:
    raise ValueError(f'model.embed.head_kind={embed.head_kind!r}, head_rank={rank}: the head '
                     f'is {error}') from None


def embed_config(model_config: Spec, vocab_size: int) -> KindConfig:
  """The validated config of the kind `model.embed.kind` names (model_config = config.model)."""
  embed = model_config.embed
  config_class = check_choices(model_config)
  return config_class.parse(embed, vocab_size=int(vocab_size),
                            model_dim=int(model_config.model_dim), dtype=model_config.dtype,
                            tied=embed.head == 'tied')


def compute_dtype(name: str) -> jnp.dtype:
  """The compute dtype `name` (model.dtype); parameters stay float32."""
  return jnp.dtype(name)


def project_to_vocab(h_BxLxK: jax.Array, table_VxK: jax.Array) -> jax.Array:
  """logits_BxLxV = h table^T in h's dtype with float32 output (a VxK table: XLA's CPU
  matmuls run this layout ~1.7x faster than h times a KxV matrix)."""
  return _logits(h_BxLxK, table_VxK.astype(h_BxLxK.dtype))


def _plain_logits(h_BxLxK: jax.Array, table_VxK: jax.Array) -> jax.Array:
  return jnp.einsum('...k,vk->...v', h_BxLxK, table_VxK, preferred_element_type=jnp.float32)


@jax.custom_vjp
def _logits(h_BxLxK: jax.Array, table_VxK: jax.Array) -> jax.Array:
  return _plain_logits(h_BxLxK, table_VxK)


def _logits_fwd(h_BxLxK: jax.Array, table_VxK: jax.Array):
  return _plain_logits(h_BxLxK, table_VxK), (h_BxLxK, table_VxK)


def _logits_bwd(residuals, g_BxLxV: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Autodiff's own gradients, but the table's computed as (h^T g)^T: left to itself, XLA
  computes g^T h and, its CPU matmuls wanting the contracted axis innermost, first copies
  the BxLxV g into VxBL (the largest array of the step); h^T g needs only h^T and a VxK
  transpose of the result. The barrier stops XLA from folding that transpose back in."""
  h_BxLxK, table_VxK = residuals
  _, h_vjp = jax.vjp(lambda h_BxLxK: _plain_logits(h_BxLxK, table_VxK), h_BxLxK)
  # One contracted axis (BL, not B and L): only then does XLA pick its fast matmul here.
  h_NxK = h_BxLxK.reshape(-1, h_BxLxK.shape[-1])
  _, table_t_vjp = jax.vjp(
      lambda t_KxV: jnp.einsum('nk,kv->nv', h_NxK, t_KxV, preferred_element_type=jnp.float32),
      table_VxK.T)
  (dtable_KxV,) = table_t_vjp(g_BxLxV.reshape(h_NxK.shape[0], -1))
  return h_vjp(g_BxLxV)[0], jax.lax.optimization_barrier(dtable_KxV).T


_logits.defvjp(_logits_fwd, _logits_bwd)


def normal(rngs: nnx.Rngs, shape: tuple[int, ...], variance: float) -> jax.Array:
  """N(0, variance) float32 entries, from the `params` stream."""
  return jax.random.normal(rngs.params(), shape, jnp.float32) * math.sqrt(variance)


def orthonormal_rows(rngs: nnx.Rngs, rows: int, cols: int) -> jax.Array:
  """A random rows x cols (rows <= cols) matrix with orthonormal rows: entry variance 1/cols."""
  q_CxR, r_RxR = jnp.linalg.qr(jax.random.normal(rngs.params(), (cols, rows), jnp.float32))
  return (q_CxR * jnp.sign(jnp.diagonal(r_RxR))).T  # Sign fix: Haar-distributed.


def checked_table(table: jax.typing.ArrayLike, vocab_size: int, dim: int) -> np.ndarray:
  """`dense_table` as a float32 host array of shape (V, D); a ValueError otherwise."""
  table = np.asarray(table, np.float32)  # a host constant, also while tracing (init_state)
  if table.shape != (vocab_size, dim):
    raise ValueError(f'dense_table has shape {table.shape}; it must be '
                     f'(vocab_size, model.model_dim)=({vocab_size}, {dim}).')
  return table


def truncated_svd(W_VxD: jax.typing.ArrayLike, rank: int) -> dict[str, np.ndarray]:
  """The rank-R truncated SVD of a dense table: dict(U=VxR, s=R, V=RxD), float32."""
  W_VxD = np.asarray(W_VxD, np.float64)
  if not 1 <= rank <= min(W_VxD.shape):
    raise ValueError(f'model.embed.rank={rank} must lie in [1, min(vocab_size, model_dim)='
                     f'{min(W_VxD.shape)}] to truncate a {W_VxD.shape} table.')
  u_VxK, s_K, v_KxD = np.linalg.svd(W_VxD, full_matrices=False)
  return {'U': u_VxK[:, :rank].astype(np.float32), 's': s_K[:rank].astype(np.float32),
          'V': v_KxD[:rank].astype(np.float32)}
