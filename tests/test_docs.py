"""README.md and docs/*.md as a reader uses them: every `:runlocal` command they show runs and
makes what it should; every file, module, config, config field and flag that a shown command
names exists; every path the text names and every relative link resolves.

Commands are the lines of fenced code blocks (`\\` continuations joined, `&&` split, comments
dropped). A runlocal command that tests/test_notebooks.py's `sweep_dir` fixture already runs
(the same arguments, read from that fixture's source) is not run twice; any other runs here,
with its workdir under tmp_path, on one CPU device."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import io
import json
import math
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tokenize

import pytest

from factorized import embeddings, metrics
from factorized.data import corpora
from tests.conftest import TEST_XLA_FLAGS

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = (ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md')))
PYTHONS = ('python', 'python3', '.venv/bin/python')
WRAPPERS = ('srun', 'nohup', 'time')  # run the command after their own options
RUNLOCAL = re.compile(r'--config=configs/\S+?\.py:(\S*,)?runlocal(,|\s|$)')
ABSL_FLAGS = ('verbosity', 'v', 'logtostderr', 'alsologtostderr', 'help', 'helpfull')
FENCE = re.compile(r'^```[^\n`]*\n(.*?)^```', re.M | re.S)


@dataclasses.dataclass(frozen=True)
class Command:
  source: str  # the .md file it is shown in
  text: str  # as shown, continuations joined, whitespace normalised
  env: tuple[tuple[str, str], ...]  # NAME=value prefixes
  argv: tuple[str, ...]  # the program and its arguments, wrappers removed
  wrapper: tuple[str, ...] = ()  # srun and its options, ...

  @property
  def is_python(self) -> bool:
    return bool(self.argv) and self.argv[0] in PYTHONS

  def flag(self, name: str) -> str | None:
    """The value of --name=value (the last one), or None."""
    values = [a.split('=', 1)[1] for a in self.argv if a.startswith(f'--{name}=')]
    return values[-1] if values else None


def shell_lines(block: str) -> list[str]:
  """A code block's command lines: `\\` continuations joined, `&&` split, comments dropped."""
  lines, current = [], ''
  for raw in block.splitlines():
    line = raw.rstrip()
    if not current and line.lstrip().startswith('#'):
      continue
    if line.endswith('\\'):
      current += line[:-1] + ' '
      continue
    lines.append(current + line)
    current = ''
  if current:
    lines.append(current)
  commands = []
  for line in lines:
    commands.extend(part.strip() for part in line.split('&&'))
  return [c for c in commands if c]


def parse(source: str, text: str) -> Command | None:
  try:
    tokens = shlex.split(text, comments=True)
  except ValueError:
    return None
  tokens = [t.strip('[]') for t in tokens if t.strip('[]')]
  env, wrapper = [], []
  while tokens and re.fullmatch(r'[A-Za-z_]\w*=.*', tokens[0]):
    env.append(tuple(tokens.pop(0).split('=', 1)))
  while tokens and tokens[0] in WRAPPERS:
    wrapper.append(tokens.pop(0))
    while tokens and tokens[0].startswith('-'):
      wrapper.append(tokens.pop(0))
  return Command(source, ' '.join(text.split()), tuple(env), tuple(tokens), tuple(wrapper))


def shown_commands() -> list[Command]:
  commands = []
  for path in DOCS:
    for block in FENCE.findall(path.read_text()):
      for line in shell_lines(block):
        command = parse(path.relative_to(ROOT).as_posix(), line)
        if command is not None and command.argv:
          commands.append(command)
  return commands


def python_commands() -> list[Command]:
  seen, unique = set(), []
  for command in shown_commands():
    if command.is_python and command.argv not in seen:
      seen.add(command.argv)
      unique.append(command)
  return unique


def runlocal_commands() -> list[Command]:
  return [c for c in python_commands() if RUNLOCAL.search(' '.join(c.argv))]


def config_of(command: Command):
  """(config module, config arg) of --config=configs/<name>.py[:arg], or (None, None)."""
  value = command.flag('config')
  if value is None:
    return None, None
  path, _, arg = value.partition(':')
  match = re.fullmatch(r'configs/(\w+)\.py', path)
  assert match and (ROOT / path).is_file(), f'{command.source}: no config file {path}'
  return importlib.import_module(f'configs.{match[1]}'), arg or None


def without_workdir(argv) -> tuple[str, ...]:
  """The arguments with the interpreter as `python` and every workdir as WORKDIR."""
  return tuple('python' if a in PYTHONS else re.sub(r'^--workdir=.*', '--workdir=WORKDIR', a)
               for a in argv)


def notebook_fixture_commands() -> set[tuple[str, ...]]:
  """The commands tests/test_notebooks.py's sweep_dir fixture runs, read from its source
  (sys.executable as `python`, f-string workdirs as WORKDIR); empty if it is not there."""
  path = ROOT / 'tests' / 'test_notebooks.py'
  if not path.exists():
    return set()
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if not (isinstance(node, ast.FunctionDef) and node.name == 'sweep_dir'):
      continue
    for call in ast.walk(node):
      if not (isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.List)):
        continue
      argv = []
      for element in call.args[0].elts:
        if isinstance(element, ast.Constant) and isinstance(element.value, str):
          argv.append(element.value)
        elif ast.unparse(element) == 'sys.executable':
          argv.append('python')
        elif isinstance(element, ast.JoinedStr):
          argv.append(''.join(v.value if isinstance(v, ast.Constant) else '{}'
                              for v in element.values))
        else:
          argv.append(None)  # something this reader cannot compare: never equal
      found.add(without_workdir(a if a is not None else '\0' for a in argv))
  return found


def command_id(command: Command) -> str:
  return f'{command.source}: {command.text}'


# The commands checked without running anything.


def test_the_docs_show_commands():
  assert {c.source for c in python_commands()} >= {'README.md', 'docs/training.md'}
  assert runlocal_commands(), 'no :runlocal command found in README.md or docs/'


def test_runlocal_commands_are_few():
  # Each distinct runlocal command shown costs CI time (tests/test_docs.py runs it).
  assert len(runlocal_commands()) <= 5, [c.text for c in runlocal_commands()]


def defines_flag(name: str, sources: list[pathlib.Path]) -> bool:
  """Whether one of `sources` defines --name: absl's DEFINE_*('name'), cli.define_config_flag
  (--config unless given another name) or a literal '--name'."""
  pattern = re.compile(rf"""(DEFINE_\w+|define_config_flag)\(\s*['"]{re.escape(name)}['"]"""
                       rf"""|['"]--{re.escape(name)}['"]"""
                       + (r'|define_config_flag\(\s*\)' if name == 'config' else ''))
  return name in ABSL_FLAGS or any(pattern.search(p.read_text()) for p in sources)


def flag_sources(command: Command) -> list[pathlib.Path]:
  """The files that define the flags of `command` (its script and what it draws flags from)."""
  program = command.argv[1]
  if program == '-m':
    spec = importlib.util.find_spec(command.argv[2])
    files = [pathlib.Path(spec.origin)]
    main = importlib.util.find_spec(command.argv[2] + '.__main__') \
        if spec.submodule_search_locations else None
    return files + ([pathlib.Path(main.origin)] if main else [])
  script = ROOT / program
  if script.parent == ROOT:  # train.py, eval.py: flags may come from the package
    return [script, *sorted((ROOT / 'factorized').rglob('*.py'))]
  return sorted(script.parent.glob('*.py'))  # benchmarks/: the scripts share their flags


@pytest.mark.parametrize('command', python_commands(), ids=command_id)
def test_a_shown_command_names_what_exists(command):
  where = f'{command.source}: {command.text}'
  assert len(command.argv) >= 2, where
  if command.argv[1] == '-m':
    module = command.argv[2]
    spec = importlib.util.find_spec(module)
    assert spec is not None, f'{where}: no module {module}'
    if spec.submodule_search_locations:  # a package runs its __main__
      assert importlib.util.find_spec(module + '.__main__'), f'{where}: {module} has no __main__'
    flags = command.argv[3:]
  else:
    assert (ROOT / command.argv[1]).is_file(), f'{where}: no file {command.argv[1]}'
    flags = command.argv[2:]
  config_module, arg = config_of(command)
  config = None
  if config_module is not None:
    try:
      config = config_module.get_config(arg)
      if hasattr(config_module, 'get_sweep'):
        config_module.get_sweep(arg)
    except ValueError as error:
      pytest.fail(f'{where}: {error}')
    embed = config.model.embed
    assert embed.kind in embeddings.KINDS and embed.head in ('tied', 'untied'), (where, embed)
  sources = flag_sources(command)
  if '--' in flags:  # what follows a bare -- is passed on to the commands it prints
    flags = flags[:flags.index('--')]
  for flag in flags:
    if not flag.startswith('--'):
      continue
    name = flag[2:].split('=', 1)[0]
    if name.startswith('config.'):
      assert config is not None, f'{where}: {flag} without --config'
      node = config
      for key in name.split('.')[1:]:
        assert hasattr(node, 'keys') and key in node, f'{where}: {flag}: no field {name[7:]}'
        node = node[key]
    else:
      assert defines_flag(name, sources), f'{where}: no flag --{name} in {command.argv[1]}'


PATH = re.compile(r'(?<![\w/.$-])(?:factorized|configs|tests|benchmarks|notebooks|results|docs|'
                  r'\.ci)/[\w./-]*')


def repo_paths(text: str) -> set[str]:
  """Paths into this repository that `text` names (up to a placeholder such as <kind>)."""
  return {p.rstrip('.') for p in PATH.findall(text)}


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_paths_modules_and_links_in_the_text_exist(doc):
  text = doc.read_text()
  missing = sorted(p for p in repo_paths(text)
                   if not (ROOT / p).exists())
  assert not missing, f'{doc.name} names paths that do not exist: {missing}'
  for module in sorted(set(re.findall(r'python -m (factorized(?:\.\w+)*)', text))):
    spec = importlib.util.find_spec(module)
    assert spec is not None, f'{doc.name}: python -m {module}: no such module'
    if spec.submodule_search_locations:
      assert importlib.util.find_spec(module + '.__main__'), f'{doc.name}: {module}: no __main__'
  for target in re.findall(r'\]\((?!https?:|mailto:)([^)\s]+)\)', text):
    path, _, anchor = target.partition('#')
    resolved = (doc.parent / path).resolve() if path else doc
    assert resolved.exists(), f'{doc.name}: broken link {target}'
    if anchor and resolved.suffix == '.md':
      headings = re.findall(r'^#+\s+(.*?)\s*$', resolved.read_text(), re.M)
      slugs = {re.sub(r'[^\w\- ]', '', h.lower()).replace(' ', '-') for h in headings}
      assert anchor in slugs, f'{doc.name}: link {target}: no such heading in {path or doc.name}'


# The Python sources' own text: docstrings and comments.

SOURCES = sorted({*(ROOT / 'factorized').rglob('*.py'), *(ROOT / 'configs').glob('*.py'),
                  ROOT / 'train.py', ROOT / 'eval.py', *(ROOT / 'benchmarks').glob('*.py')})
# A Python file or notebook named on its own or under folders (`pipeline.py`, `train/optim.py`);
# a placeholder in angle brackets (`<kind>.py`) is no file.
PYTHON_FILE = re.compile(r'(?<![\w/.$<>-])(?:[\w-]+/)*[\w-]+\.(?:py|ipynb)(?![\w<>])')
MODULE = re.compile(r'(?<![\w.])factorized(?:\.[A-Za-z_]\w*)+')


def docstrings_and_comments(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, text) of every comment and module, class or function docstring of `path`."""
  source = path.read_text()
  found = [(token.start[0], token.string)
           for token in tokenize.generate_tokens(io.StringIO(source).readline)
           if token.type == tokenize.COMMENT]
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      docstring = ast.get_docstring(node, clean=False)
      if docstring is not None:
        found.append((node.body[0].lineno, docstring))
  return sorted(found)


def names_a_file(name: str, source: pathlib.Path) -> bool:
  """Whether `name`, as written in `source`, is a file or folder of the repository: a path
  from its root, from the package (`model/loss.py`) or from `source`'s own folder."""
  return any((base / name).exists() for base in (ROOT, ROOT / 'factorized', source.parent))


def names_a_module(name: str) -> bool:
  """Whether dotted `name` is a module of the package or a name defined in one."""
  parts = name.split('.')
  for cut in range(len(parts), 0, -1):
    module = '.'.join(parts[:cut])
    try:
      found = importlib.util.find_spec(module)
    except ModuleNotFoundError:
      found = None
    if found is None:
      continue
    node = importlib.import_module(module) if cut < len(parts) else None
    for attribute in parts[cut:]:
      if not hasattr(node, attribute):
        return False
      node = getattr(node, attribute)
    return True
  return False


def test_the_source_text_reader_finds_files_and_modules(tmp_path):
  source = tmp_path / 'example.py'
  source.write_text('"""See pipeline.py, model/loss.py and factorized.train.step."""\n'
                    'def f():\n  """Per `factorized/embeddings/<kind>.py`."""\n'
                    '  return 1  # a comment naming configs/brown.py\n')
  texts = ' '.join(text for _, text in docstrings_and_comments(source))
  assert set(PYTHON_FILE.findall(texts)) == {'pipeline.py', 'model/loss.py', 'configs/brown.py'}
  assert MODULE.findall(texts) == ['factorized.train.step']
  assert names_a_file('model/loss.py', source) and names_a_file('configs/brown.py', source)
  assert not names_a_file('pipeline.py', source)  # factorized/data/pipeline.py: say data/
  assert names_a_file('pipeline.py', ROOT / 'factorized' / 'data' / 'tokenizer.py')
  assert names_a_module('factorized.embeddings.KINDS')
  assert not names_a_module('factorized.embeddings.NOPE')
  assert not names_a_module('factorized.nope')


@pytest.mark.parametrize('source', SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docstrings_and_comments_name_files_and_modules_that_exist(source):
  missing = []
  for line, text in docstrings_and_comments(source):
    for match in [*PATH.finditer(text), *PYTHON_FILE.finditer(text), *MODULE.finditer(text)]:
      name = match.group(0).rstrip('.')
      exists = (names_a_module(name) if match.re is MODULE else names_a_file(name, source))
      if not exists:
        missing.append(f'line {line + text.count(chr(10), 0, match.start())}: {name}')
  assert not missing, (f'{source.relative_to(ROOT)} names what does not exist (write a path '
                       f'from the repository root, the package or its own folder): {missing}')


# Hand-kept lists of the plug-ins, against their registries.


def registries() -> dict[str, tuple[str, ...]]:
  """Every registered plug-in by registry: kinds in table order, corpora, metrics."""
  return {'kind': embeddings.KINDS, 'corpus': corpora.CORPORA,
          'metric': tuple(metric.name for metric in metrics.metrics())}


def table_column(text: str, heading: str) -> list[str]:
  """The first column (`name`) of the first Markdown table whose first heading is `heading`."""
  match = re.search(rf'^\| *{heading} *\|.*\n\|[-:| ]+\|\n((?:\|.*\n?)*)', text, re.M)
  assert match, f'no table headed `{heading}`'
  return re.findall(r'^\| *`?(\w+)`? *\|', match[1], re.M)


@pytest.mark.parametrize('doc', ['README.md', 'docs/kinds.md'])
def test_a_kind_table_lists_every_registered_kind_in_order(doc):
  listed = table_column((ROOT / doc).read_text(), 'kind')
  assert listed == list(embeddings.KINDS), (
      f'{doc}: its kind table lists {listed}; the registered kinds are {embeddings.KINDS}: '
      'give every kind a row, in factorized.embeddings.KINDS order')


@pytest.mark.parametrize('package, registry', [
    ('factorized/embeddings', 'kind'), ('factorized/data/corpora', 'corpus'),
    ('factorized/metrics', 'metric')])
def test_a_plugin_packages_docstring_lists_every_registered_plugin(package, registry):
  """Its table (a line `  <name>  what it is  <name>.py` per plug-in) names each once."""
  docstring = ast.get_docstring(ast.parse((ROOT / package / '__init__.py').read_text()))
  listed = re.findall(r'^  ([a-z]\w*)  ', docstring, re.M)
  files = re.findall(r'\s(\w+)\.py$', docstring, re.M)
  names = registries()[registry]
  where = f'{package}/__init__.py docstring'
  assert sorted(listed) == sorted(names), f'{where} lists {listed}, registered: {names}'
  assert files == listed, f'{where}: each row ends with its file: {files} != {listed}'
  if registry == 'kind':
    assert listed == list(names), f'{where}: not in factorized.embeddings.KINDS order'


def one_of_lists(text: str) -> list[str]:
  """`a|b|c` choices in `text` (the way a docstring writes one of several values)."""
  return re.findall(r'(?<![\w|])[a-z]\w*(?:\|[a-z]\w*)+(?![\w|])', text)


def test_a_one_of_list_of_plugins_names_every_one():
  """A `dense|albert|svd` written in the docs or a docstring goes stale when a kind is
  added: name the registry instead (factorized.embeddings.KINDS)."""
  texts = {path.relative_to(ROOT).as_posix(): path.read_text()
           for path in (*DOCS, ROOT / 'benchmarks' / 'README.md')}
  for source in SOURCES:
    texts[source.relative_to(ROOT).as_posix()] = '\n'.join(
        text for _, text in docstrings_and_comments(source))
  stale = []
  for where, text in texts.items():
    for choices in one_of_lists(text):
      items = choices.split('|')
      for registry, names in registries().items():
        if len(set(items) & set(names)) >= 2 and sorted(items) != sorted(names):
          stale.append(f'{where}: {choices} (registered {registry}s: {"|".join(names)})')
  assert not stale, stale
  assert one_of_lists('kind=dense|svd, head=tied|untied') == ['dense|svd', 'tied|untied']


# The runlocal commands, run.


def needs_brown(command: Command, config) -> bool:
  corpus = command.flag('config.data.corpus') or config.data.corpus
  return corpus == 'brown'


def products(command: Command, config_module) -> list[str]:
  if command.argv[1] == 'eval.py':
    return [f'eval_{command.flag("split") or "test"}.json']
  if hasattr(config_module, 'get_sweep'):
    return ['summary.csv', 'summary.md', 'aggregate.csv', 'ppl_vs_vocab_params.png']
  return ['summary.json', 'config.json', 'tokenizer.json']


@pytest.mark.parametrize('command', runlocal_commands(), ids=command_id)
def test_a_runlocal_command_runs(command, request, tmp_path):
  if not command.wrapper and without_workdir(command.argv) in notebook_fixture_commands():
    return  # tests/test_notebooks.py's sweep_dir fixture runs exactly this command
  if command.wrapper and shutil.which(command.wrapper[0]) is None:
    pytest.skip(f'{command.wrapper[0]} is not installed here')
  config_module, arg = config_of(command)
  config = config_module.get_config(arg)
  env = {k: v for k, v in os.environ.items() if k != 'FACTORIZED_SWEEP_DIR'}
  if needs_brown(command, config):
    env['FACTORIZED_DATA_DIR'] = str(request.getfixturevalue('brown_zip').parent)
  env.update(command.env)
  env['XLA_FLAGS'] = TEST_XLA_FLAGS  # one CPU device, as a user's CPU has: compiles fastest
  workdir = tmp_path / command.flag('workdir').lstrip('/')
  argv = [*command.wrapper, *(sys.executable if a in PYTHONS else
                              (f'--workdir={workdir}' if a.startswith('--workdir=') else a)
                              for a in command.argv)]
  done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, (f'{command.source}: {command.text} exited {done.returncode}:\n'
                                f'{done.stdout[-3000:]}\n{done.stderr[-3000:]}')
  missing = [p for p in products(command, config_module) if not (workdir / p).exists()]
  assert not missing, f'{command.text} did not write {missing} in its workdir'
  if (workdir / 'summary.json').exists():
    summary = json.loads((workdir / 'summary.json').read_text())
    assert math.isfinite(summary['test_ppl']) and summary['test_ppl'] > 1, summary['test_ppl']


def test_every_runlocal_command_has_a_config_and_a_workdir():
  # test_a_runlocal_command_runs moves the workdir under tmp_path and reads the config's kind
  # of products (a run or a sweep): a runlocal command shown without them could not be run.
  for command in runlocal_commands():
    assert config_of(command)[0] is not None and command.flag('workdir'), command.text
