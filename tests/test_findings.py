"""The README's results section: generated from the committed summaries, and in sync."""

import json

import pytest

from factorized import findings
from tests.test_sweep import fake_run

BANDS = ('1-100', '101-1000')


def bands(frequent, rare):
  return {'1-100': {'ppl': frequent, 'tokens': 5}, '101-1000': {'ppl': rare, 'tokens': 3}}


@pytest.fixture
def sweep_dir(tmp_path):
  for seed, test in enumerate((100.0, 102.0, 104.0)):
    fake_run(tmp_path, f'dense_seed{seed}', 'dense', 16, test=test, seed=seed,
             bands=bands(10.0, 1000.0))
  for rank, test in ((4, 130.0), (8, 106.0), (16, 103.0)):
    fake_run(tmp_path, f'svd_rank{rank}_seed0', 'svd', rank, test=test,
             bands=bands(10.5, 1000.0 * test / 102.0))
  for rank, test in ((4, 150.0), (8, 140.0)):
    fake_run(tmp_path, f'albert_rank{rank}_seed0', 'albert', rank, test=test,
             bands=bands(11.0, 1400.0))
  fake_run(tmp_path, 'dense_untied_seed0', 'dense', 16, head='untied', test=98.0)
  fake_run(tmp_path, 'svd_rank8_untied_seed0', 'svd', 8, head='untied', test=101.0)
  posthoc = {'split': 'test', 'dense_ppl': 100.0, 'head': 'tied',
             'ppl_by_rank': {'4': 900.0, '8': 400.0},
             'params_by_rank': {'4': {'embedding': 4260, 'total': 9260},
                                '8': {'embedding': 8520, 'total': 13520}},
             'finetune_steps': 300, 'finetuned_ppl_by_rank': {'4': 140.0, '8': 108.0},
             'dense_finetuned_ppl': 99.0, 'dense_params': {'embedding': 64000, 'total': 69000}}
  (tmp_path / 'dense_seed0' / 'posthoc_svd_test.json').write_text(json.dumps(posthoc))
  (tmp_path / 'machine.json').write_text(json.dumps({'description': 'a test box'}))
  return tmp_path


def test_the_section_reads_the_thresholds_noise_posthoc_heads_and_bands(sweep_dir):
  text = findings.render(sweep_dir)
  assert text.startswith(findings.BEGIN) and text.rstrip().endswith(findings.END)
  assert '| dense | tied |  | 3 | 64,000 | 102.0 ± 2.0 | +0.0% |' in text
  # svd: 103 <= 1.02 * 102 from rank 16; 106 <= 1.05 * 102 from rank 8. albert never.
  assert ('- **svd**: within 2% from rank 16 (103.0, 17,040 vocab parameters); within 5% '
          'from rank 8 (106.0, 8,520 vocab parameters).') in text
  assert ('- **albert**: never within 2% up to rank 8 (best 140.0 at rank 8); never within '
          '5%') in text
  # Only dense has seeds (std 2): differences under 4 are noise: svd 16 (+1) is, svd 8 not.
  assert ('pooled ±2.0. Differences from dense under twice that (4.0) are within seed noise: '
          'svd 16.') in text
  assert '| 8 | 8,520 | 400.0 | 108.0 | 106.0 |' in text  # post-hoc, +300 steps, scratch
  # 900 / 130 and 400 / 106; then 140 / 130 and 108 / 106 (a difference of 2 < 2 x 2.0).
  assert ('- Truncating the trained dense table (no fine-tuning) loses to svd trained from '
          'scratch at rank 4 (+592.3%), 8 (+277.4%).') in text
  assert ('- With 300 fine-tuning steps, post-hoc SVD loses to svd trained from scratch at '
          'rank 4 (+7.7%), 8 (+1.9%, within seed noise).') in text
  assert 'reaches 99.0 against 102.0 ± 2.0 (-2.9%), so the extra steps alone lower it too.' in text
  # 98 / 102 and 101 / 106, each for a second 16 x 4,000 matrix.
  assert ('- Untying the head changes test perplexity by: dense -3.9% for 64,000 more '
          'parameters; svd 8 -4.7% for 64,000 more parameters.') in text
  assert 'the dense model fine-tuned the same 300 steps (dense_ft300) reaches 99.0' in text
  assert '| svd | 8 | 8,520 | 106.0 | 72,520 | 101.0 |' in text  # tied against untied
  assert '| svd | 4 | 1.05 | 1.27 |' in text  # band ppl over dense's
  assert 'svd at rank 4 pays most in band `101-1000` (×1.27)' in text
  assert 'Machine: a test box. 10 trained points' in text


def test_replace_section_keeps_the_rest_of_the_readme(sweep_dir):
  readme = f'# title\n\n{findings.BEGIN}\nold\n{findings.END}\n\n## next\n'
  new = findings.replace_section(readme, findings.render(sweep_dir))
  assert new.startswith('# title\n\n' + findings.BEGIN)
  assert new.endswith(f'{findings.END}\n\n## next\n')
  assert '\nold\n' not in new
  with pytest.raises(ValueError, match='no results section between the markers'):
    findings.replace_section('# title\n', 'x')


def test_the_readme_results_are_generated_from_results_brown(repo_root, monkeypatch):
  monkeypatch.chdir(repo_root)  # the section names results/brown as a relative path
  readme = (repo_root / 'README.md').read_text()
  section = findings.render('results/brown')
  start = readme.index(findings.BEGIN)
  assert readme[start:start + len(section)] == section, (
      'README.md differs from results/brown: run python -m factorized.findings results/brown '
      '--readme=README.md')
