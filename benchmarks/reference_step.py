r"""A minimal plain-JAX Transformer LM train step (no Flax, no optax, no shard_map).

The floor for framework overhead: the same maths as the project's dense, tied,
dropout-free step (factorized/model/transformer.py, factorized/train/step.py) written as pure
functions of a dict of arrays, so that `step_time.py` can compare the two in one
process. Same shapes and work: 0.02 sqrt(D) scaled VxD table lookup, pre-LN blocks
with a fused QKV projection, RoPE, `jax.nn.dot_product_attention(is_causal=True)`,
a tanh-GELU MLP, final LayerNorm, tied head logits = x W^T (float32), mean token
NLL, global-norm clipping and AdamW (weight decay on matrices), one jitted update.
It has no dropout: compare it with the project's step at dropout 0.

Shapes: B batch, L length, D model width, V vocabulary, H heads, K head width,
M MLP width.

Standalone: python benchmarks/reference_step.py --vocab_size=16384 --model_dim=256
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from factorized.runtime.allocator import ensure_fast_malloc  # noqa: E402

if __name__ == '__main__':
  ensure_fast_malloc()  # Before jax is imported: it re-execs the process.

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

LN_EPS = 1e-6  # flax.nnx.LayerNorm's default
INPUT_STD = 0.02


def init_params(key: jax.Array, *, vocab_size: int, model_dim: int, num_layers: int,
                mlp_dim: int) -> dict:
  """Parameters with the project's dense tied model's shapes and initial scales."""
  dim = model_dim
  keys = iter(jax.random.split(key, 1 + 4 * num_layers))

  def normal(shape, std):
    return jax.random.normal(next(keys), shape, jnp.float32) * std

  out_std = math.sqrt(1.0 / (2 * num_layers))
  blocks = []
  for _ in range(num_layers):
    blocks.append({
        'ln1_scale_D': jnp.ones((dim,)), 'ln1_bias_D': jnp.zeros((dim,)),
        'qkv_Dx3D': normal((dim, 3 * dim), 1 / math.sqrt(dim)), 'qkv_3D': jnp.zeros((3 * dim,)),
        'out_DxD': normal((dim, dim), out_std / math.sqrt(dim)), 'out_D': jnp.zeros((dim,)),
        'ln2_scale_D': jnp.ones((dim,)), 'ln2_bias_D': jnp.zeros((dim,)),
        'in_DxM': normal((dim, mlp_dim), 1 / math.sqrt(dim)), 'in_M': jnp.zeros((mlp_dim,)),
        'mlp_out_MxD': normal((mlp_dim, dim), out_std / math.sqrt(mlp_dim)),
        'mlp_out_D': jnp.zeros((dim,)),
    })
  return {'W_VxD': normal((vocab_size, dim), 1 / math.sqrt(dim)), 'blocks': blocks,
          'lnf_scale_D': jnp.ones((dim,)), 'lnf_bias_D': jnp.zeros((dim,))}


def layer_norm(x_BxLxD: jax.Array, scale_D: jax.Array, bias_D: jax.Array) -> jax.Array:
  """LayerNorm over the last axis (nnx.LayerNorm's fast variance: E[x^2] - E[x]^2)."""
  mean_BxLx1 = x_BxLxD.mean(-1, keepdims=True)
  var_BxLx1 = jnp.maximum(jnp.square(x_BxLxD).mean(-1, keepdims=True) - jnp.square(mean_BxLx1),
                          0.0)
  return (x_BxLxD - mean_BxLx1) * jax.lax.rsqrt(var_BxLx1 + LN_EPS) * scale_D + bias_D


def rope(x_BxLxHxK: jax.Array) -> jax.Array:
  """Rotate-half RoPE, base 10000 (tables are compile-time constants)."""
  _, length, _, head_dim = x_BxLxHxK.shape
  inv_freq = 10000.0 ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  angles_LxK2 = np.arange(length, dtype=np.float64)[:, None] * inv_freq[None, :]
  cos = np.cos(angles_LxK2)[:, None].astype(np.float32)
  sin = np.sin(angles_LxK2)[:, None].astype(np.float32)
  x1, x2 = jnp.split(x_BxLxHxK, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def forward(params: dict, ids_BxL: jax.Array, num_heads: int) -> jax.Array:
  """logits_BxLxV, float32."""
  table_VxD = params['W_VxD']
  batch, length = ids_BxL.shape
  dim = table_VxD.shape[1]
  x_BxLxD = table_VxD[ids_BxL] * (INPUT_STD * math.sqrt(dim))
  for p in params['blocks']:
    h_BxLxD = layer_norm(x_BxLxD, p['ln1_scale_D'], p['ln1_bias_D'])
    qkv_BxLx3xHxK = (h_BxLxD @ p['qkv_Dx3D'] + p['qkv_3D']).reshape(
        batch, length, 3, num_heads, dim // num_heads)
    q, k, v = (qkv_BxLx3xHxK[:, :, i] for i in range(3))
    attn_BxLxHxK = jax.nn.dot_product_attention(rope(q), rope(k), v, is_causal=True)
    x_BxLxD = x_BxLxD + attn_BxLxHxK.reshape(batch, length, dim) @ p['out_DxD'] + p['out_D']
    h_BxLxD = layer_norm(x_BxLxD, p['ln2_scale_D'], p['ln2_bias_D'])
    h_BxLxM = jax.nn.gelu(h_BxLxD @ p['in_DxM'] + p['in_M'], approximate=True)
    x_BxLxD = x_BxLxD + h_BxLxM @ p['mlp_out_MxD'] + p['mlp_out_D']
  x_BxLxD = layer_norm(x_BxLxD, params['lnf_scale_D'], params['lnf_bias_D'])
  return jnp.einsum('bld,vd->blv', x_BxLxD, table_VxD)


def loss_fn(params: dict, ids_BxL: jax.Array, targets_BxL: jax.Array, num_heads: int
            ) -> jax.Array:
  """Mean token NLL: logsumexp(logits) - logits[target]."""
  logits_BxLxV = forward(params, ids_BxL, num_heads)
  target_BxL = jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  return jnp.mean(jax.nn.logsumexp(logits_BxLxV, axis=-1) - target_BxL)


def make_train_step(num_heads: int, *, lr: float = 3e-3, b1: float = 0.9, b2: float = 0.98,
                    eps: float = 1e-8, weight_decay: float = 0.1, grad_clip: float = 1.0
                    ) -> Callable[[dict, dict], tuple[dict, jax.Array]]:
  """The jitted `(state, batch) -> (state, loss)` with AdamW; `state` is donated."""

  def step(state: dict, batch: dict) -> tuple[dict, jax.Array]:
    params = state['params']
    loss, grads = jax.value_and_grad(loss_fn)(params, batch['inputs'], batch['targets'],
                                              num_heads)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    clip = jnp.minimum(1.0, grad_clip / (grad_norm + 1e-6))
    count = state['count'] + 1
    correction1 = 1 - b1 ** count.astype(jnp.float32)
    correction2 = 1 - b2 ** count.astype(jnp.float32)

    def update(p, g, m, v):
      g = g * clip
      m = b1 * m + (1 - b1) * g
      v = b2 * v + (1 - b2) * jnp.square(g)
      delta = (m / correction1) / (jnp.sqrt(v / correction2) + eps)
      if p.ndim >= 2:
        delta = delta + weight_decay * p
      return p - lr * delta, m, v

    flat = jax.tree.map(update, params, grads, state['mu'], state['nu'])
    is_triple = lambda x: isinstance(x, tuple)
    pick = lambda i: jax.tree.map(lambda t: t[i], flat, is_leaf=is_triple)
    return {'params': pick(0), 'mu': pick(1), 'nu': pick(2), 'count': count}, loss

  return jax.jit(step, donate_argnums=0)


def init_state(params: dict) -> dict:
  """Adam state: zero moments and a step count."""
  zeros = jax.tree.map(jnp.zeros_like, params)
  return {'params': params, 'mu': zeros, 'nu': jax.tree.map(jnp.zeros_like, params),
          'count': jnp.zeros((), jnp.int32)}


def synthetic_batch(vocab_size: int, batch_size: int, seq_len: int, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """Uniformly random int32 inputs and targets (speed does not depend on their values)."""
  rng = np.random.default_rng(seed)
  return {name: rng.integers(0, vocab_size, (batch_size, seq_len), dtype=np.int32)
          for name in ('inputs', 'targets')}


def add_shape_flags(parser: argparse.ArgumentParser) -> None:
  """The model-shape flags of both benchmark scripts (defaults: V=16,384, D=256, 4 layers,
  4 heads, MLP 4 D, seq_len 128, batch 16: benchmarks/README.md's benchmark shape)."""
  parser.add_argument('--vocab_size', type=int, default=16384)
  parser.add_argument('--model_dim', type=int, default=256)
  parser.add_argument('--num_layers', type=int, default=4)
  parser.add_argument('--num_heads', type=int, default=4)
  parser.add_argument('--mlp_dim', type=int, default=0, help='0: 4 x model_dim')
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--batch_size', type=int, default=16)


def main(argv: list[str] | None = None) -> None:
  """Times the reference step alone and prints median/min/max and tokens/s."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_shape_flags(parser)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=3)
  args = parser.parse_args(argv)
  params = init_params(jax.random.key(0), vocab_size=args.vocab_size, model_dim=args.model_dim,
                       num_layers=args.num_layers, mlp_dim=args.mlp_dim or 4 * args.model_dim)
  state, step = init_state(params), make_train_step(args.num_heads)
  batch = jax.device_put(synthetic_batch(args.vocab_size, args.batch_size, args.seq_len))
  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    state, loss = step(state, batch)
    jax.block_until_ready((state, loss))
    if i >= args.warmup:
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  print(f'reference step: median {median * 1e3:.1f} ms (min {min(times) * 1e3:.1f}, max '
        f'{max(times) * 1e3:.1f}), {args.batch_size * args.seq_len / median:,.0f} tokens/s, '
        f'loss {float(loss):.3f}, load average {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
  main()
