"""The findings of a results folder and the README's headline: generated from the committed
summaries, by t-based tests, with every gap to dense split by frequency group."""

import json
import math
import re

import pytest
from scipy import stats as scipy_stats

from factorized.analysis import comparison, findings, folders, headline, memory, plots
from factorized.analysis import table as sweep_table
from tests.test_sweep import fake_run

VERDICTS = ('beats', 'ahead', 'better', 'worse', 'loses', 'lower', 'higher')


def bands(test, rare=0.0, unk=0.0):
  """Test bands whose token-weighted loss is log(test), as a real summary's: `1-100` (60% of
  the tokens), `101+` (30%) and `<unk>` (10%); `rare` and `unk` move those two bands' loss
  (nats), the frequent band makes up for it."""
  total = math.log(test)
  frequent = total - (0.3 * rare + 0.1 * unk) / 0.6
  return {name: {'loss': loss, 'ppl': math.exp(loss), 'tokens': tokens} for name, loss, tokens
          in (('1-100', frequent, 6), ('101+', total + rare, 3), ('<unk>', total + unk, 1))}


def classes(test, never=0.0):
  """Test classes (train count) whose weighted loss is log(test): `0` (10%), `1-3` (10%),
  `11-100` (30%), `101+` (40%), `<unk>` (10%); `never` moves class `0`'s loss."""
  total = math.log(test)
  frequent = total - 0.1 * never / 0.7
  return {name: {'loss': loss, 'ppl': math.exp(loss), 'tokens': tokens} for name, loss, tokens
          in (('0', total + never, 1), ('1-3', total, 1), ('11-100', frequent, 3),
              ('101+', frequent, 4), ('<unk>', total, 1))}


def patch(run_dir, **fields):
  """Rewrites a fake run's summary.json with `fields` (`data.*`: into its config)."""
  path = run_dir / 'summary.json'
  summary = json.loads(path.read_text())
  for key, value in fields.items():
    if key.startswith('data.'):
      summary['config'].setdefault('data', {})[key.removeprefix('data.')] = value
    else:
      summary[key] = value
  path.write_text(json.dumps(summary))


def p_value(difference, s, df, *counts):
  """The two-sided p of the pooled t-test, computed here from its definition."""
  t = difference / (s * math.sqrt(sum(1 / n for n in counts)))
  return 2 * scipy_stats.t.sf(abs(t), df)


def verdict_free(text):
  """Every clause that says 'within seed noise' carries no verdict word."""
  for clause in re.split(r'[;.\n]|, and ', text):
    if 'within seed noise' in clause:
      assert not any(word in clause.lower().split() for word in VERDICTS), clause


@pytest.fixture
def sweep_dir(tmp_path):
  # dense: 3 seeds (sd 2): the only seeded point, so s = 2 on 2 degrees of freedom.
  for seed, test in enumerate((100.0, 102.0, 104.0)):
    fake_run(tmp_path, f'dense_seed{seed}', 'dense', 16, test=test, seed=seed,
             bands=bands(test))
  for rank, test in ((4, 130.0), (8, 106.0), (16, 103.0), (64, 101.0)):
    fake_run(tmp_path, f'svd_rank{rank}_seed0', 'svd', rank, test=test, bands=bands(test, 0.1),
             best_step=1000 if rank == 8 else None)
  for rank, test in ((4, 150.0), (8, 140.0)):
    fake_run(tmp_path, f'albert_rank{rank}_seed0', 'albert', rank, test=test,
             bands=bands(test, 0.05))
  # tt 8: far lower overall, all of it from the rare band (-1.5 nats there).
  fake_run(tmp_path, 'tt_rank8_seed0', 'tt', 8, test=70.0, bands=bands(70.0, -1.5))
  fake_run(tmp_path, 'dense_untied_seed0', 'dense', 16, head='untied', test=98.0,
           bands=bands(98.0))
  fake_run(tmp_path, 'svd_rank8_untied_seed0', 'svd', 8, head='untied', test=101.0,
           bands=bands(101.0))
  # Post-hoc of dense_seed0 (test 100) at its step 1,500: rank 64 (65,000 parameters >=
  # dense's 64,000) truncates nothing; fine-tuned 300 steps more (1,800 in all).
  posthoc = {'split': 'test', 'dense_ppl': 100.0, 'head': 'tied', 'step': 1500,
             'ppl_by_rank': {'4': 900.0, '8': 400.0, '64': 100.0},
             'params_by_rank': {'4': {'embedding': 4260, 'total': 9260},
                                '8': {'embedding': 8520, 'total': 13520},
                                '64': {'embedding': 68160, 'total': 73160}},
             'finetune_steps': 300,
             'finetuned_ppl_by_rank': {'4': 140.0, '8': 108.0, '64': 103.0},
             'dense_finetuned_ppl': 101.0, 'dense_params': {'embedding': 64000, 'total': 69000}}
  (tmp_path / 'dense_seed0' / 'posthoc_svd_test.json').write_text(json.dumps(posthoc))
  (tmp_path / 'machine.json').write_text(json.dumps({'description': 'a test box'}))
  return tmp_path


def test_a_difference_is_real_only_by_the_t_test_and_within_noise_gets_no_verdict(sweep_dir):
  text = findings.render(sweep_dir)
  folder = folders.Folder.load(sweep_dir)
  assert text.startswith(folder.header)
  # One seed against dense's three: t_0.975,2 = 4.30, not a fixed 2: the threshold is
  # 4.30 x 2 x sqrt(1 + 1/3) = 9.9. svd 8 (+4) is within it, svd 4 (+28) not.
  threshold = scipy_stats.t.ppf(0.975, 2) * 2 * math.sqrt(4 / 3)
  assert f'(against the 3-seed dense mean: {threshold:.1f} for one seed' in text
  assert 's = 2.0 with 2 degrees of freedom' in text
  svd8 = p_value(4.0, 2.0, 2, 1, 3)
  assert (f'| svd | tied | 8 | 1 | 8,520 | 34,080 | 106.0 | +3.9%, within seed noise, '
          f'p = {svd8:.2g} |') in text
  svd4 = p_value(28.0, 2.0, 2, 1, 3)
  assert f'| svd | tied | 4 | 1 | 4,260 | 17,040 | 130.0 | +27.5%, p = {svd4:.2g} |' in text
  assert svd4 < 0.05 < svd8
  # "within x%" carries the test: svd 16 is within 2% and within seed noise.
  assert ('- **svd**: within 2% from rank 16 (103.0, 17,040 vocab parameters: +1.0%, within '
          f'seed noise, p = {p_value(1.0, 2.0, 2, 1, 3):.2g}); within 5% from rank 8') in text
  assert ('Compressions within seed noise of dense: svd 8 (1 seed, p = 0.23), svd 16 (1 seed, '
          'p = 0.71).') in text
  # Untied heads: one seed against three, and one against one (4.30 x 2 x sqrt(2)).
  assert ('dense -3.9%, within seed noise, p = 0.23, for 64,000 more parameters; svd 8 -4.7%, '
          f'within seed noise, p = {p_value(5.0, 2.0, 2, 1, 1):.2g}, for') in text
  verdict_free(text)
  verdict_free(headline.render_headline(sweep_dir))
  # The page counts its tests, each comparison once however often it prints it.
  count = int(re.search(r'this page makes (\d+) tests', text).group(1))
  assert 15 <= count <= 30


def tt_parts(table, dense):
  return comparison.decompose(table[table['run'] == 'tt_rank8_seed0'], dense,
                            sweep_table.BAND_PREFIX).parts


def test_every_gap_to_dense_is_split_by_frequency_group_and_the_parts_sum_to_it(sweep_dir):
  table = sweep_table.rows_table(sweep_table.collect_rows(sweep_dir)[0])
  dense = table[(table['kind'] == 'dense') & (table['head'] == 'tied')
                & (table['method'] == 'trained')]
  for run in ('tt_rank8_seed0', 'svd_rank4_seed0', 'albert_rank8_seed0'):
    found = comparison.decompose(table[table['run'] == run], dense, sweep_table.BAND_PREFIX)
    gap = math.log(float(table.loc[table['run'] == run, 'test_ppl'].iloc[0])) - sum(
        math.log(t) for t in (100.0, 102.0, 104.0)) / 3
    assert found.gap == pytest.approx(gap)
    assert sum(found.parts.values()) == pytest.approx(gap)  # nats per test token
    assert found.shares == pytest.approx({'1-100': 0.6, '101+': 0.3, '<unk>': 0.1})
  # tt 8's part in the rare band: (its loss there - dense's mean loss there) x its 30%.
  dense_loss = sum(math.log(t) for t in (100.0, 102.0, 104.0)) / 3
  assert tt_parts(table, dense)['101+'] == pytest.approx(
      0.3 * (math.log(70.0) - 1.5 - dense_loss))
  text = findings.render(sweep_dir)
  assert ('| point | all tokens | band `1-100` (60.0%) | band `101+` (30.0%) | band `<unk>` '
          '(10.0%) | test ppl vs dense | frequent-type ppl vs dense |') in text
  row = next(line for line in text.splitlines() if line.startswith('| tt 8 |'))
  cells = [c.strip() for c in row.split('|')[2:6]]
  assert float(cells[0]) == pytest.approx(sum(map(float, cells[1:])), abs=0.002)
  # The headline says where tt 8's gain comes from, and that it is worse on frequent types.
  block = headline.render_headline(sweep_dir)
  assert ('tt 8: lower all-token perplexity than dense, -31.4%, Holm p = 0.018 (-0.376 nats '
          'per test token). It comes entirely from band `101+` (30.0% of test tokens, -0.563 '
          'nats); the frequent types (60.0%) add +0.224.') in block
  assert '| tt | 8 | 16,000 | 25% | 1 | 70.0 | -31.4%, Holm p = 0.018 | 148.2 | +45.3%' in block


def test_the_frequent_types_are_the_classes_seen_11_times_when_summaries_have_them(sweep_dir):
  for run_dir in sweep_dir.iterdir():
    if (run_dir / 'summary.json').exists():
      test = json.loads((run_dir / 'summary.json').read_text())['test_ppl']
      patch(run_dir, test_classes=classes(test, -5.0 if run_dir.name.startswith('tt') else 0))
  text = findings.render(sweep_dir)
  assert ('the tokens whose type occurs at least 11 times in the train split (classes '
          '`11-100`, `101+`: 70.0% of test tokens)') in text
  # The split is by class now (train count), the bands aside.
  assert '| point | all tokens | class (train count) `0` (10.0%) |' in text
  block = headline.render_headline(sweep_dir)
  assert 'It comes entirely from class `0` (10.0% of test tokens' in block


def test_the_headline_family_is_holm_adjusted_and_the_adjusted_verdict_is_printed(tmp_path):
  # dense (3 seeds, sd 2) and three kinds near a quarter of it, each one seed: svd and
  # albert about 2.6 s away (p about 0.03 alone), tt far away.
  for seed, test in enumerate((100.0, 102.0, 104.0)):
    fake_run(tmp_path, f'dense_seed{seed}', 'dense', 16, test=test, seed=seed)
  fake_run(tmp_path, 'svd_rank16_seed0', 'svd', 16, test=114.0)
  fake_run(tmp_path, 'albert_rank16_seed0', 'albert', 16, test=90.0)
  fake_run(tmp_path, 'tt_rank8_seed0', 'tt', 8, test=160.0)
  alone = p_value(12.0, 2.0, 2, 1, 3)
  assert alone < 0.05
  text = findings.render(tmp_path)
  assert f'| svd | tied | 16 | 1 | 17,040 | 68,160 | 114.0 | +11.8%, p = {alone:.2g} |' in text
  block = headline.render_headline(tmp_path)
  assert "Holm's adjustment over the 3 comparisons with dense in this block" in block
  # Sorted p: tt's (tiny) x 3, then 0.044 x 2 for both: no longer real after adjustment.
  adjusted = min(1.0, 2 * alone)
  assert (f'| svd | 16 | 17,040 | 27% | 1 | 114.0 | +11.8%, within seed noise, Holm p = '
          f'{adjusted:.2g} |') in block
  assert f'svd 16: all-token perplexity +11.8%, within seed noise, Holm p = {adjusted:.2g}' \
         in block
  assert '| tt | 8 | 16,000 | 25% | 1 | 160.0 | +56.9%, Holm p = ' in block
  verdict_free(block)


def test_post_hoc_rows_meet_scratch_rows_only_at_matched_steps(sweep_dir):
  text = findings.render(sweep_dir)
  assert '| rank | vocab params | post-hoc SVD | post-hoc SVD + ft300 | svd from scratch |' in text
  assert '| 8 | 8,520 | 400.0 | 108.0 | 106.0 |' in text
  # Without fine-tuning, at the parent's 1,500 steps: tested against scratch (1 vs 1 seed).
  assert ('- Post-hoc SVD against svd trained from scratch, at the same training steps: higher '
          'at rank 4 (+592.3%, p < 0.001), 8 (+277.4%, p < 0.001).') in text
  # Fine-tuned: 1,800 steps against 1,500: no test, no verdict.
  assert ('- Post-hoc SVD + ft300 against svd trained from scratch: not step-matched (1,800 '
          'against 1,500 training steps), so no verdict: rank 4 (+7.7%), 8 (+1.9%).') in text
  # Against its own parent (dense_seed0: 100), not the seeds' mean, without a noise test.
  assert ('| posthoc_svd | tied | 8 | 1 | 8,520 | 34,080 | 400.0 | +300.0% vs its parent '
          'dense_seed0 |') in text
  assert ('| posthoc_svd_ft300 | tied | 8 | 1 | 8,520 | 34,080 | 108.0 | +8.0% vs its parent '
          'dense_seed0, not step-matched (1,800 against 1,500 training steps) |') in text
  assert ('the parent dense_seed0 trained the same 300 steps further (dense_ft300) reaches '
          '101.0 against its own 100.0 (+1.0%: the same run continued') in text
  # At rank 64 nothing is truncated: against the control at the same 1,800 steps, tested.
  assert ("300 fine-tuning steps in svd form end at 103.0 against the control's 101.0 at the "
          f'same steps: +2.0%, within seed noise, p = {p_value(2.0, 2.0, 2, 1, 1):.2g}.') in text
  assert 'Rank 64 keeps at least dense\'s vocabulary parameters: no compression' in text


def test_published_anchors_are_compared_only_under_their_protocol(sweep_dir):
  anchor = {'name': 'a published LM', 'test_ppl': 120.0, 'vocab_size': 1000,
            'test_tokens': 10, 'source': 'a paper'}
  other = {**anchor, 'name': 'another', 'vocab_size': 16383, 'test_tokens': 181041}
  (sweep_dir / 'findings.json').write_text(json.dumps({'anchors': [anchor, other]}))
  text = findings.render(sweep_dir)
  # The fake runs have 1,000 types and 10 test tokens: the first anchor's protocol.
  assert ('Published anchors under this protocol (same vocabulary and test tokens): a '
          'published LM (a paper), 120: dense (tied, 102.0 ± 2.0) -15.0%') in text
  assert ('Published anchors measured under another protocol, so not compared with these '
          'numbers: another, 120 (a paper): vocabulary 16,383 against 1,000 here, 181,041 test '
          'tokens against 10.') in text


def test_tuned_configurations_choose_over_every_swept_field_and_flag_edges(sweep_dir):
  # svd 16 at two more rates and at 3,000 steps; dense at a second rate and at 3,000 steps.
  # Best valid: svd 16 at 3,000 steps (30), dense at 3,000 steps (35, best at step 2,500).
  fake_run(sweep_dir, 'svd_rank16_lr0.0015_seed0', 'svd', 16, valid=60.0, test=110.0,
           lr=1.5e-3, bands=bands(110.0))
  fake_run(sweep_dir, 'svd_rank16_lr0.006_seed0', 'svd', 16, valid=40.0, test=101.5, lr=6e-3,
           bands=bands(101.5))
  fake_run(sweep_dir, 'dense_lr0.006_seed0', 'dense', 16, valid=55.0, test=90.0, lr=6e-3,
           bands=bands(90.0))
  fake_run(sweep_dir, 'dense_num_steps3000_seed0', 'dense', 16, valid=35.0, test=95.0,
           num_steps=3000, best_step=2500, bands=bands(95.0))
  fake_run(sweep_dir, 'svd_rank16_num_steps3000_seed0', 'svd', 16, valid=30.0, test=80.0,
           num_steps=3000, bands=bands(80.0, -1.0))
  text = findings.render(sweep_dir)
  # The main table stays at the grid's own settings (lr 3e-3, 1,500 steps).
  assert '| svd | tied | 16 | 1 | 17,040 | 68,160 | 103.0 | +1.0%, within seed noise' in text
  # Over the learning rate alone (the tuning plot's): dense at 3e-3 (50 against 55 on
  # valid, though 6e-3 tests better), svd 16 at 6e-3.
  assert ('| dense | | lr 0.003 | 2: 0.003+0.006 | 50.0 | 1500/1500/1500 of 1500 (the last: '
          'still improving) | 102.0 ± 2.0 | | |') in text
  assert '| svd | 16 | lr 0.006 | 3: 0.0015+0.003+0.006 | 40.0 |' in text
  # Over every swept field: 3,000 steps for both; 4 configurations of svd 16 out of the 6
  # combinations of the values tried; both at the edge of num_steps, dense of lr too.
  assert ('| svd | 16 | lr 0.003, num_steps 3000 | 4 of 6: lr 0.0015+0.003+0.006; num_steps '
          '1500+3000 | 30.0 | 3000 of 3000 (the last: still improving) | 80.0 | -15.8%') in text
  assert '| dense | | lr 0.003, num_steps 3000 | 3 of 4: lr 0.003+0.006; num_steps 1500+3000 | ' \
         '35.0 | 2500 of 3000 | 95.0 |' in text
  assert ('- The chosen value is the lowest or highest tried for: dense (lr, num_steps); svd '
          '16 (num_steps). A wider range may do better there.') in text
  block = headline.render_headline(sweep_dir)
  # -15.8% (p = 0.034 alone) is within seed noise once Holm-adjusted over the block's 8.
  assert ('| svd | 16 | lr 0.003, num_steps 3000 | 4 of 6 | 3000 of 3000 (the last: still '
          'improving) | 80.0 | -15.8%, within seed noise, Holm p = 0.1 |') in block
  assert 'At the edge of the values tried (a wider range may do better): dense (lr, ' \
         'num_steps); svd 16 (num_steps).' in block
  # Longer training: the gap to dense at each step count, and whether it moved (four means:
  # 1 + 3 + 1 + 1 seeds).
  moved = p_value(-16.0, 2.0, 2, 1, 3, 1, 1)
  assert moved < 0.05 and f'svd 16 +1.0 → -15.0 (-16.0, p = {moved:.2g})' in text
  assert ('- Step of best valid perplexity in the 3000-step runs (the last one: still '
          'improving): dense_num_steps3000_seed0 2500, svd_rank16_num_steps3000_seed0 3000 '
          '(the last).') in text
  verdict_free(text)


def test_a_second_folder_is_a_few_lines_of_description_with_its_own_markers(tmp_path):
  brown, other = tmp_path / 'brown', tmp_path / 'brown_trainvocab'
  for root, vocab_from in ((brown, 'all'), (other, 'train')):
    for seed, test in enumerate((100.0, 102.0)):
      fake_run(root, f'dense_seed{seed}', 'dense', 16, test=test, seed=seed, bands=bands(test))
      patch(root / f'dense_seed{seed}', **{'data.vocab_from': vocab_from})
    fake_run(root, 'svd_rank16_seed0', 'svd', 16, test=104.0, bands=bands(104.0))
    patch(root / 'svd_rank16_seed0', **{'data.vocab_from': vocab_from})
  (other / 'findings.json').write_text(json.dumps({
      'title': 'Results on Brown, vocabulary from the train split',
      'protocol': 'the vocabulary counted on the train split only',
      'config': {'data.vocab_from': 'train'}}))
  described = [folders.Folder.load(root) for root in (brown, other)]
  assert described[1].begin.startswith('<!-- results:brown_trainvocab headline begin: generated '
                                     f'from {other.as_posix()} by `python -m ')
  assert findings.render(other).startswith(
      '# Results on Brown, vocabulary from the train split\n')
  readme = '\n\n'.join(f'{f.begin}\nold\n{f.end}' for f in described) + '\n\n## next\n'
  for folder in described:
    readme = headline.replace_section(readme, headline.render_headline(folder.root), folder)
  assert '\nold\n' not in readme and readme.endswith('## next\n')
  assert readme.count('ppl_vs_vocab_params.png') == 2
  with pytest.raises(ValueError, match='no results section between the markers'):
    headline.replace_section('# title\n', 'x', described[0])
  # A run of another protocol in the folder is refused, naming the field and the fix.
  fake_run(other, 'svd_rank8_seed0', 'svd', 8, test=110.0)
  patch(other / 'svd_rank8_seed0', **{'data.vocab_from': 'all'})
  with pytest.raises(ValueError, match="svd_rank8_seed0: data.vocab_from='all'.*move the run"):
    findings.render(other)
  (other / 'findings.json').write_text(json.dumps({'budgett': 0.3}))
  with pytest.raises(ValueError, match=r"unknown fields \['budgett'\]"):
    folders.Folder.load(other)


def test_the_findings_and_the_readme_headline_are_generated_from_results_brown(repo_root,
                                                                               monkeypatch):
  monkeypatch.chdir(repo_root)  # they name results/brown as a relative path
  folder = folders.Folder.load('results/brown')
  fix = f'run {folder.command}'
  findings_file = repo_root / 'results' / 'brown' / folders.FINDINGS_FILE
  assert findings_file.read_text() == findings.render('results/brown'), (
      f'{findings_file} differs from the data: {fix}')
  readme = (repo_root / 'README.md').read_text()
  block = headline.render_headline('results/brown')
  start = readme.index(folder.begin)
  assert readme[start:start + len(block)].rstrip('\n') == block.rstrip('\n'), (
      f'README.md\'s headline differs from results/brown: {fix}')


def test_the_output_head_as_its_own_factorization_splits_a_budget(sweep_dir):
  """Untied heads of their own kind: every point near a quarter of dense's vocabulary
  parameters by valid perplexity, the best split against the best tied point, the map."""
  from factorized.analysis import report

  for rank, head_rank, valid, test in ((4, 4, 45.0, 101.0), (4, 8, 48.0, 99.0),
                                       (8, 4, 47.0, 103.0), (8, 8, 52.0, 104.0)):
    fake_run(sweep_dir, f'svd_rank{rank}_untied_headsvd{head_rank}_seed0', 'svd', rank,
             head='untied', head_kind='svd', head_rank=head_rank, valid=valid, test=test)
  report.write_reports(sweep_dir)
  assert (sweep_dir / report.HEAD_MAP_FILE).exists()
  text = findings.render(sweep_dir)
  one = p_value(1.0, 2.0, 2, 1, 3)  # one seed against dense's three, 1.0 apart
  assert (f'| svd 4 | untied svd 4 | 8,520 | 13.3% | 1 | 45.0 | 101.0 | -1.0%, within seed '
          f'noise, p = {one:.2g} |') in text
  assert '| svd 8 | untied svd 8 |' not in text  # 17,040: above 26% of 64,000
  # The tied points tie at valid 50: the smallest (svd 4, 4,260) is the best tied one.
  assert ('- Best split by valid perplexity: input svd 4, head untied svd 4: test 101.0, '
          '-22.3%, p = ') in text
  assert ('- Against the same budget in one tied svd table (svd 8, 8,520 vocab params, '
          f'106.0): -4.7%, within seed noise, p = {p_value(5.0, 2.0, 2, 1, 1):.2g}.') in text
  assert f'({report.HEAD_MAP_FILE})' in text
  assert ('**The input rank × head rank map**, svd input and svd head:\n\n'
          '- Raising the head rank (test perplexity): at input svd 4, head rank 4 → 8: 101.0 → '
          f'99.0 (-2.0%, within seed noise, p = {p_value(2.0, 2.0, 2, 1, 1):.2g});') in text
  assert ('- The same vocabulary parameters on the head rather than the input (input + head): '
          'svd 4 + svd 8 (99.0) against svd 8 + svd 4 (103.0): -3.9%, within seed noise') in text
  assert 'svd 4 untied svd' not in text.split('**Tied against untied')[1].split('**The output')[0]
  verdict_free(text)


def test_the_thresholds_noise_bands_and_improving_points_are_read(sweep_dir):
  text = findings.render(sweep_dir)
  assert ('- **albert**: never within 2% and 5% up to rank 8 (best 140.0 at rank 8: +37.3%, '
          f'p = {p_value(38.0, 2.0, 2, 1, 3):.2g}).') in text
  # A point below the reference is said to be, and one rank meeting both thresholds is
  # named once: tt 8 (70.0) is 31% below dense.
  assert '- **tt**: below dense or within 2% and 5% from rank 8 (70.0,' in text
  assert 'rank 64 has at least dense\'s vocabulary parameters (no compression).' in text
  assert '| svd | 4 | 1.21 | 1.41 | 1.27 |' in text  # band ppl over dense's
  assert 'Still improving at their last step (best valid perplexity at the final evaluation)' \
         ': 11 of 12 points' in text and 'svd_rank8_seed0' not in text.split('Still')[1]
  assert 'Machine: a test box. 12 trained points' in text


def test_the_headline_says_first_whether_any_factorization_beats_dense(tmp_path):
  for seed, test in enumerate((100.0, 102.0, 104.0)):
    fake_run(tmp_path, f'dense_seed{seed}', 'dense', 16, test=test, seed=seed,
             bands=bands(test))
  first = headline.render_headline(tmp_path).split('\n')[2]
  assert first == ('No factorized point has finished under this protocol yet; the table '
                   'holds dense alone.')
  # svd: within seed noise; albert: worse. No factorization beats dense.
  fake_run(tmp_path, 'svd_rank16_seed0', 'svd', 16, test=101.0, bands=bands(101.0))
  fake_run(tmp_path, 'albert_rank16_seed0', 'albert', 16, test=160.0, bands=bands(160.0))
  first = headline.render_headline(tmp_path).split('\n')[2]
  assert first.startswith('**No factorization beats dense** at this budget (Holm-adjusted')
  verdict_free(first)
  # tt far lower, all of it from the rare band: it beats dense on all tokens, not on the
  # frequent types, and the sentence says where the gain sits.
  fake_run(tmp_path, 'tt_rank8_seed0', 'tt', 8, test=60.0, bands=bands(60.0, -1.5))
  first = headline.render_headline(tmp_path).split('\n')[2]
  assert first.startswith('**Lower test perplexity than dense beyond seed noise at this budget: '
                          'tt 8**')
  assert 'on the frequent types, none does, so what they gain sits in the rarer tokens' in first


def test_with_one_seed_a_point_the_headline_says_nothing_is_tested_yet(tmp_path):
  fake_run(tmp_path, 'dense_seed0', 'dense', 16, test=100.0, bands=bands(100.0))
  fake_run(tmp_path, 'svd_rank16_seed0', 'svd', 16, test=90.0, bands=bands(90.0))
  block = headline.render_headline(tmp_path)
  assert block.split('\n')[2].startswith('**No difference can be tested yet**')
  assert 'not yet tested (one seed a side) for svd 16 -10.0%.' in block  # no verdict twice
  assert 'within seed noise of dense for svd 16' not in block


def quantized(run_dir, valid, test, bytes_by_bits):
  """A post-training quantization of `run_dir` at each width of {bits: (valid, test)}."""
  for split, index in (('valid', 0), ('test', 1)):
    result = {'method': 'posthoc_quant', 'split': split, 'step': 1500, 'group': 0,
              'trained_quant_bits': 0,
              'ppl_by_bits': {bits: (valid, test)[index][bits] for bits in bytes_by_bits},
              'bands_ppl_by_bits': {bits: {name: group['ppl'] for name, group in
                                           bands(test[bits]).items()} for bits in bytes_by_bits},
              'bytes_by_bits': {bits: {'embedding': size, 'output_head': 0, 'vocab': size}
                                for bits, size in bytes_by_bits.items()}}
    (run_dir / f'posthoc_quant_{split}.json').write_text(json.dumps(result))


@pytest.fixture
def memory_dir(tmp_path):
  # dense float32: 64,000 parameters, 256,000 bytes; 3 seeds (s = 2 on 2 degrees of freedom).
  for seed in range(3):
    run = f'dense_seed{seed}'
    fake_run(tmp_path, run, 'dense', 16, valid=50.0 + seed, test=100.0 + 2 * seed, seed=seed,
             bands=bands(100.0 + 2 * seed))
    # int8 at 25% of the float32 bytes, int4 at 13.3%.
    quantized(tmp_path / run, {'8': 50.5, '4': 60.0},
              {'8': 101.0 + 2 * seed, '4': 120.0 + 2 * seed},
              {'8': 64000, '4': 34000})
  fake_run(tmp_path, 'svd_rank8_seed0', 'svd', 8, valid=70.0, test=130.0)  # 34,080 bytes
  # albert 8 has the lowest test perplexity of all, but a high valid one: never chosen.
  fake_run(tmp_path, 'albert_rank8_seed0', 'albert', 8, valid=80.0, test=60.0)
  fake_run(tmp_path, 'tt_rank8_seed0', 'tt', 8, valid=55.0, test=95.0)  # 64,000 bytes: 25%
  quantized(tmp_path / 'tt_rank8_seed0', {'8': 56.0}, {'8': 96.0}, {'8': 16500})  # 6.4%
  fake_run(tmp_path, 'dpq_rank16_seed0', 'dpq', 16, valid=90.0, test=150.0)
  patch(tmp_path / 'dpq_rank16_seed0', bytes={'embedding': 5000, 'output_head': 0,
                                               'vocab': 5000})  # codes + codebooks: 2.0%
  return tmp_path


def test_the_memory_front_chooses_by_valid_within_each_share_of_dense_bytes(memory_dir):
  page = comparison.Points(folders.Folder.load(memory_dir))
  front = memory.front(page)
  assert [float(front.reference['vocab_bytes']), front.reference['seeds']] == [256000, 3]
  chosen = [(b.share, None if b.best is None else memory.label(b.best),
             None if b.runner_up is None else memory.label(b.runner_up)) for b in front.budgets]
  # Chosen by valid perplexity: albert 8 (test 60) never, dense int8 (valid 50.5) at 25%.
  assert chosen == [(0.25, 'dense int8 post-training', 'tt 8 float32'),
                    (0.10, 'tt 8 int8 post-training', 'dpq 16 codes'),
                    (0.03, 'dpq 16 codes', None)]
  top = front.budgets[0]
  # dense int8 (3 seeds, mean 103) against dense float32 (3 seeds, 102) and tt 8 (1 seed,
  # 95): the pooled t-test, its p from the definition.
  assert top.versus_reference.p == pytest.approx(p_value(1.0, 2.0, 2, 3, 3))
  assert top.versus_runner_up.p == pytest.approx(p_value(8.0, 2.0, 2, 3, 1))
  assert not top.versus_runner_up.real
  text = findings.render(memory_dir)
  section = text.split('**The memory-perplexity front**')[1].split('Test perplexity by')[0]
  assert ('At most 25% of dense float32\'s bytes (64,000): **dense int8 post-training** '
          '(64,000 bytes, 25.0%; 3 seeds), test 103.0 ± 2.0, +1.0%, within seed noise') in section
  assert 'At most 3% of dense float32\'s bytes (7,680): **dpq 16 codes** (5,000 bytes, 2.0%' in (
      section)
  # Where a gap comes from, for a quantized row too: its file's bands, its parent's shares.
  gap = sum(math.log(101.0 + 2 * s) - math.log(100.0 + 2 * s) for s in range(3)) / 3
  assert top.where.gap == pytest.approx(gap) and sum(top.where.parts.values()) == (
      pytest.approx(gap))
  assert f'Of its gap to dense ({gap:+.3f} nats per test token): the frequent types' in section
  verdict_free(section)
  # Composition: tt 8 int8 (16,500 bytes) against dense quantized nearest in bytes (int4,
  # 34,000), lower beyond seed noise at fewer bytes.
  assert [(memory.label(p.factorized), memory.label(p.reference)) for p in front.pairs] == [
      ('tt 8 int8 post-training', 'dense int4 post-training')]
  assert 'they compose here: lower perplexity at no more bytes' in section


def test_the_headline_reads_the_memory_front_once_a_table_is_stored_other_than_float32(
    memory_dir, tmp_path_factory):
  block = headline.render_headline(memory_dir)
  # A post-training width is no setting of the grid: the trained runs' settings only.
  assert "the grid's settings, against dense" in block and 'nan' not in block
  # dpq's parameters are its codebooks alone: it is sized in bytes, not in the budget table.
  assert '| tt | 8 |' in block and '| dpq |' not in block
  paragraph = block.split('**Memory**')[1].split('The full findings')[0]
  tests = memory.front(comparison.Points(folders.Folder.load(memory_dir))).tests()
  assert f'These {len(tests)} comparisons are one family, Holm-adjusted.' in paragraph
  assert 'Holm p' in paragraph and ', p = ' not in paragraph
  # Composition in one sentence: tt 8 int8 (16,500 bytes, 96) against dense int4 (34,000,
  # mean 122): lower at fewer bytes, beyond seed noise even once Holm-adjusted.
  assert ('- Factorization and quantization: of 1 factorized points stored quantized, each '
          'against dense quantized to the nearest bytes, lower perplexity at no more bytes '
          'beyond seed noise for tt 8 int8 post-training against dense int4 post-training '
          '-21.3%, Holm p = ') in paragraph
  verdict_free(paragraph)
  # Float32 tables alone: no memory paragraph in the headline (the findings keep the front).
  plain = tmp_path_factory.mktemp('plain')
  for seed, test in enumerate((100.0, 102.0, 104.0)):
    fake_run(plain, f'dense_seed{seed}', 'dense', 16, test=test, seed=seed, bands=bands(test))
  fake_run(plain, 'tt_rank8_seed0', 'tt', 8, test=95.0, bands=bands(95.0))
  assert '**Memory**' not in headline.render_headline(plain)
  assert '**The memory-perplexity front**' in findings.render(plain)


def test_runs_trained_from_scratch_meet_whatever_their_steps_and_post_hoc_rows_only_matched(
    sweep_dir):
  # num_steps is a setting like any other: dense at 3,000 steps against svd 16 at 1,500 is
  # tested (tuned configurations may differ in it); a fine-tuned post-hoc row is not.
  fake_run(sweep_dir, 'dense_num_steps3000_seed0', 'dense', 16, valid=35.0, test=95.0,
           num_steps=3000, bands=bands(95.0))
  page = comparison.Points(folders.Folder.load(sweep_dir))
  every = page.trained(sweep_table.aggregate(page.table))
  longer = every[(every['kind'] == 'dense') & (every['num_steps'] == 3000)].iloc[0]
  svd = page.pick(page.groups, 'svd', rank=16)
  assert page.step_mismatch(longer, svd) == ''
  assert page.versus(longer, svd).startswith('-7.8%, ')
  posthoc = page.pick(page.groups, None, rank=8, method='posthoc_svd', finetune_steps=300)
  assert page.step_mismatch(posthoc, svd) == (', not step-matched (1,800 against 1,500 '
                                              'training steps)')


def test_the_headline_figure_draws_a_sibling_protocol_beside_at_tuned_configurations(tmp_path):
  ours, theirs = tmp_path / 'trainvocab', tmp_path / 'bengio'
  for root, scale in ((ours, 1.0), (theirs, 2.0)):
    for seed, test in enumerate((100.0, 102.0, 104.0)):
      fake_run(root, f'dense_seed{seed}', 'dense', 16, test=scale * test, seed=seed,
               bands=bands(scale * test))
    fake_run(root, 'svd_rank8_seed0', 'svd', 8, valid=60.0, test=scale * 110.0)
  # svd 8 at a second rate with a lower valid perplexity: the tuned point the figure draws.
  fake_run(ours, 'svd_rank8_lr0.006_seed0', 'svd', 8, valid=40.0, test=120.0, lr=6e-3)
  (ours / 'findings.json').write_text(json.dumps({'panel': 'train vocabulary',
                                                  'beside': 'bengio'}))
  (theirs / 'findings.json').write_text(json.dumps({'panel': 'Bengio'}))
  table = sweep_table.rows_table(sweep_table.collect_rows(ours)[0])
  drawn = plots.protocol_rows(table)
  svd = drawn[drawn['kind'] == 'svd'].iloc[0]
  assert (svd['lr'], svd['test_ppl_mean']) == (6e-3, 120.0)
  assert folders.Folder.load(ours).sibling.panel == 'Bengio'
  assert findings.write_protocols(theirs) is None  # names no sibling
  path = findings.write_protocols(ours)
  assert path == ours / 'ppl_vs_vocab_params_protocols.png' and path.stat().st_size > 0
  block = headline.render_headline(ours)
  assert ('![test perplexity against vocabulary parameters, each point at its tuned '
          f'configuration: train vocabulary beside Bengio]({ours.as_posix()}/'
          'ppl_vs_vocab_params_protocols.png)') in block
  assert '/ppl_vs_vocab_params.png)' in headline.render_headline(theirs)


def test_every_point_searched_is_compared_at_its_tuned_configuration(tmp_path):
  # svd 16 sits nearest the budget; svd 8 was searched too: both get their tuned row.
  for seed, test in enumerate((100.0, 102.0, 104.0)):
    fake_run(tmp_path, f'dense_seed{seed}', 'dense', 16, test=test, seed=seed, bands=bands(test))
  fake_run(tmp_path, 'dense_lr0.006_seed0', 'dense', 16, valid=60.0, test=99.0, lr=6e-3,
           bands=bands(99.0))
  for rank in (8, 16):
    fake_run(tmp_path, f'svd_rank{rank}_seed0', 'svd', rank, valid=45.0, test=110.0,
             bands=bands(110.0))
    fake_run(tmp_path, f'svd_rank{rank}_lr0.006_seed0', 'svd', rank, valid=55.0, test=90.0,
             lr=6e-3, bands=bands(90.0))
  block = headline.render_headline(tmp_path)
  tuned = block.split('At each kind\'s tuned configuration')[1]
  assert '| svd | 8 | lr 0.003 |' in tuned and '| svd | 16 | lr 0.003 |' in tuned


def test_the_same_two_points_at_two_shares_are_one_test_of_the_memory_family(memory_dir):
  # tt 8 int8 (6.4% of dense float32's bytes) is the best within 10% and within 8%: its
  # tests against dense and against dpq 16 count once each in the Holm family.
  (memory_dir / 'findings.json').write_text(json.dumps({'byte_shares': [0.10, 0.08]}))
  found = memory.front(comparison.Points(folders.Folder.load(memory_dir)))
  assert [memory.label(b.best) for b in found.budgets] == ['tt 8 int8 post-training'] * 2
  assert len(found.tests()) == 3  # against dense, against dpq 16, and its compose pair
  adjusted = found.adjusted()
  assert adjusted.budgets[0].versus_reference == adjusted.budgets[1].versus_reference
  assert adjusted.budgets[0].versus_reference.p_adjusted is not None
  assert 'These 3 comparisons are one family' in headline.render_headline(memory_dir)


def test_the_summary_table_gives_the_valid_perplexity_of_the_checkpoint_tested(sweep_dir):
  # svd 4 overfits: valid 70 at its best step, 75 at its last; its test perplexity is the
  # best step's, so the table shows 70.
  patch(sweep_dir / 'svd_rank4_seed0', valid_ppl=75.0, best_valid_ppl=70.0, best_step=750)
  text = findings.render(sweep_dir)
  assert '| frequent-type ppl | best valid ppl |' in text
  row = next(line for line in text.splitlines() if line.startswith('| svd | tied | 4 |'))
  assert row.endswith('| 70.0 |')
