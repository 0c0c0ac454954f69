"""Tests of factorized/embeddings/spectrum.py: QR-based singular values and rank statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import brown
from factorized import embeddings
from factorized.embeddings import spectrum


def random_factors(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=shape).astype(np.float32) for shape in shapes]


@pytest.mark.parametrize('shapes', [
    [(30, 12)],                     # dense
    [(40, 6), (6, 12)],             # albert / svd
    [(40, 6), (6, 5), (5, 12)],     # three factors
    [(4, 6), (6, 12)],              # fewer rows than the inner width
    [(40, 9), (9, 7)],              # inner width larger than D
])
def test_singular_values_equal_those_of_the_product(shapes):
  factors = random_factors(shapes)
  product = factors[0].astype(np.float64)
  for factor in factors[1:]:
    product = product @ factor
  expected = np.linalg.svd(product, compute_uv=False)
  got = np.asarray(spectrum.singular_values(factors))
  assert np.all(np.diff(got) <= 1e-6)  # Descending.
  num = min(len(got), len(expected))
  np.testing.assert_allclose(got[:num], expected[:num], rtol=1e-4, atol=1e-4 * expected[0])
  assert np.all(np.abs(got[num:]) < 1e-4 * expected[0])  # Any extra values are zeros.
  assert np.all(expected[num:] < 1e-4 * expected[0])


def test_singular_values_never_form_the_product():
  vocab, width, dim = 50, 7, 24
  factors = random_factors([(vocab, width), (width, dim)])

  def shapes(jaxpr):
    for eqn in getattr(jaxpr, 'jaxpr', jaxpr).eqns:
      yield from (tuple(v.aval.shape) for v in eqn.outvars)
      for sub in eqn.params.values():
        if hasattr(sub, 'eqns') or hasattr(sub, 'jaxpr'):
          yield from shapes(sub)

  found = set(shapes(jax.make_jaxpr(spectrum.singular_values)(factors)))
  assert (width, width) in found and not found & {(vocab, dim), (dim, vocab)}


@pytest.mark.parametrize('kind,penalty', [('dense', 0.0), ('albert', 0.0), ('svd', 0.0),
                                          ('svd', 0.1), ('adaptive', 0.0), ('tt', 0.0)])
def test_singular_values_of_embedding_factors(kind, penalty):
  config = brown.get_config('runlocal').model
  config.embed.update({'kind': kind, 'rank': 8, 'ortho_penalty': penalty})
  counts = np.random.default_rng(1).permutation(60)  # adaptive: not the id order
  embed = embeddings.embed_config(config, 60).build(nnx.Rngs(0), token_counts=counts)
  if kind == 'albert':  # A non-zero bias: the table is A P + 1 b^T.
    embed.b_D[...] = jax.random.normal(jax.random.key(1), embed.b_D.shape)
  table = np.asarray(embed(jnp.arange(60)[None])[0], np.float64)  # The VxD table.
  expected = np.linalg.svd(table, compute_uv=False)
  got = np.asarray(spectrum.singular_values(embed.factors()))
  np.testing.assert_allclose(got, expected[:len(got)], rtol=1e-4, atol=1e-5 * expected[0])
  if kind == 'svd' and penalty > 0:  # On the constraint set: s sqrt(V/R) are singular values.
    np.testing.assert_allclose(got, embed.s_R[...] * np.sqrt(60 / 8), rtol=1e-5)


def test_rank_statistics_on_known_spectra():
  flat = np.ones(8)
  assert spectrum.stable_rank(flat) == pytest.approx(8)
  assert spectrum.entropy_effective_rank(flat) == pytest.approx(8)
  spike = np.array([3.0, 0.0, 0.0])
  assert spectrum.stable_rank(spike) == pytest.approx(1)
  assert spectrum.entropy_effective_rank(spike) == pytest.approx(1)
  assert spectrum.stable_rank(np.zeros(3)) == 0.0
  sv = np.array([2.0, 1.0, 1.0])  # Energies 4, 1, 1 of 6.
  np.testing.assert_allclose(spectrum.cumulative_energy(sv), [4 / 6, 5 / 6, 1.0])
  np.testing.assert_allclose(spectrum.cumulative_energy(sv[::-1]), [4 / 6, 5 / 6, 1.0])
  assert spectrum.stable_rank(sv) == pytest.approx(1.5)
  assert [spectrum.rank_for_energy(sv, f) for f in (0.5, 4 / 6, 0.7, 0.9, 1.0)] == [
      1, 1, 2, 3, 3]
  p = sv / sv.sum()
  assert spectrum.entropy_effective_rank(sv) == pytest.approx(np.exp(-np.sum(p * np.log(p))))


def test_statistics_reject_bad_input():
  with pytest.raises(ValueError, match='fraction'):
    spectrum.rank_for_energy(np.ones(3), 0.0)
  with pytest.raises(ValueError, match='1-D'):
    spectrum.stable_rank(np.ones((2, 2)))
  with pytest.raises(ValueError, match='do not chain'):
    spectrum.singular_values([np.ones((4, 3)), np.ones((2, 5))])
  with pytest.raises(ValueError, match='at least one factor'):
    spectrum.singular_values([])


def test_reconstruction_error_is_eckart_young():
  rng = np.random.default_rng(1)
  w_VxD = rng.normal(size=(30, 12)) * np.linspace(3, 0.1, 12)
  u, s, vt = np.linalg.svd(w_VxD, full_matrices=False)
  explicit = [np.linalg.norm(w_VxD - (u[:, :r] * s[:r]) @ vt[:r]) / np.linalg.norm(w_VxD)
              for r in range(13)]
  np.testing.assert_allclose(spectrum.reconstruction_error(s), explicit, atol=1e-12)
  np.testing.assert_allclose(spectrum.reconstruction_error(s[::-1], [0, 5, 12]),
                             np.asarray(explicit)[[0, 5, 12]], atol=1e-12)
  with pytest.raises(ValueError, match=r'must lie in \[0, 12\]'):
    spectrum.reconstruction_error(s, [13])


@pytest.mark.parametrize('shapes', [[(20, 9)], [(20, 5), (5, 9)], [(20, 5), (5, 4), (4, 9)]])
def test_factored_svd_is_the_svd_of_the_product(shapes):
  rng = np.random.default_rng(2)
  factors = [rng.normal(size=shape) for shape in shapes]
  table = factors[0] if len(factors) == 1 else np.linalg.multi_dot(factors)
  u, s, vt = spectrum.factored_svd(factors)
  np.testing.assert_allclose((u * s) @ vt, table, atol=1e-10)
  np.testing.assert_allclose(u.T @ u, np.eye(s.size), atol=1e-10)
  np.testing.assert_allclose(vt @ vt.T, np.eye(s.size), atol=1e-10)
  np.testing.assert_allclose(s, np.linalg.svd(table, compute_uv=False)[:s.size], rtol=1e-10)
  np.testing.assert_allclose(s, np.asarray(spectrum.singular_values(factors))[:s.size],
                             rtol=1e-4)
  largest = u[np.argmax(np.abs(u), axis=0), np.arange(s.size)]
  assert np.all(largest > 0)


def test_spectrum_table_and_energy_ranks():
  sv = np.sqrt([50.0, 30.0, 10.0, 9.0, 1.0])  # energy 0.5, 0.8, 0.9, 0.99, 1.0
  table = spectrum.spectrum_table({'w': sv})
  row = table.loc['w']
  assert spectrum.energy_column(0.9) == 'rank_90' and spectrum.energy_column(0.99) == 'rank_99'
  assert row['rank_90'] == 3 and row['rank_99'] == 4
  assert row['singular_values'] == 5
  np.testing.assert_allclose(row['stable_rank'], 2.0)
  np.testing.assert_allclose(row['entropy_effective_rank'], spectrum.entropy_effective_rank(sv))
