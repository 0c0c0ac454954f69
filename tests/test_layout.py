"""The package's layout: imports flow one way, from the entry points down to the model and
the data, and no module imports itself back through others (no cycles)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'factorized'

# Top to bottom: a module may import its own sub-package and any layer below its own, never
# one above or beside it. A package's __main__.py (`python -m factorized.data`) is an entry
# point, as train.py and eval.py are, and sits above every layer; the top-level modules
# (plugins, files, spec, cache, frequency) sit at the bottom.
ENTRY_POINTS = '__main__'
LAYERS = (
    (ENTRY_POINTS,),
    ('sweeps',),
    ('analysis',),
    ('evaluation',),
    ('train',),
    ('config',),
    ('model', 'runtime'),
    ('embeddings', 'metrics'),
    ('data',),
    ('plugins', 'files', 'spec', 'cache', 'frequency'),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(path): path for path in sorted(PACKAGE.rglob('*.py'))}


def _nodes(path: pathlib.Path) -> list[ast.AST]:
  """Every node of the module, its `__main__` block's too."""
  return list(ast.walk(ast.parse(path.read_text())))


def _imports(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
  """The factorized modules `path` imports, anywhere in it (function-level imports and a
  `__main__` block's too)."""
  found = set()
  for node in _nodes(path):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names if alias.name.startswith('factorized'))
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('factorized'):
      for alias in node.names:  # `from factorized.x import y`: y is a module or a name in x
        child = f'{node.module}.{alias.name}'
        found.add(child if child in modules else node.module)
  return {name for name in found if name in modules and name != 'factorized'}


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _part(module: str) -> str:
  """The layer a module belongs to: a package's __main__ is an entry point; any other module
  belongs to its sub-package, or to its own name at the top level."""
  if module.rpartition('.')[2] == '__main__':
    return ENTRY_POINTS
  return module.split('.')[1] if module.count('.') else ''


def test_every_module_belongs_to_a_layer():
  unplaced = sorted(m for m in _graph() if m != 'factorized' and _part(m) not in RANK)
  assert not unplaced, f'add these to a layer of tests/test_layout.py LAYERS: {unplaced}'


def test_imports_flow_down_the_layers():
  upward = sorted(f'{module} imports {target}' for module, targets in _graph().items()
                  for target in targets
                  if _part(module) in RANK and _part(target) in RANK
                  and _part(module) != _part(target) and RANK[_part(target)] <= RANK[_part(module)])
  assert not upward, 'imports against the layering (see LAYERS):\n' + '\n'.join(upward)


def test_imports_in_a_main_block_count(tmp_path):
  """A `__main__` block's imports are the module's own: one importing upward is caught."""
  modules = _modules()
  library = tmp_path / 'library.py'
  library.write_text("if __name__ == '__main__':\n  from factorized.config import build\n")
  assert _imports(library, modules) == {'factorized.config.build'}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}  # 1 on the current path, 2 done
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == 1:
        return path[path.index(target):] + [target]
      if target not in state and (found := visit(target)):
        return found
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_no_import_cycles():
  cycle = _cycle(_graph())
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


@pytest.mark.parametrize('graph, expected', [
    ({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}, ['a', 'b', 'c', 'a']),
    ({'a': {'b'}, 'b': {'c'}, 'c': set()}, None),
])
def test_the_cycle_check_finds_a_cycle(graph, expected):
  assert _cycle(graph) == expected


def test_ml_collections_stays_at_the_config_boundary():
  """Only configs/, the entry points and factorized/config read ConfigDicts; below, Specs."""
  readers = sorted(
      name for name, path in _modules().items() if _part(name) != 'config' and any(
          isinstance(node, (ast.Import, ast.ImportFrom)) and 'ml_collections' in ast.unparse(node)
          for node in _nodes(path)))
  assert not readers, f'ml_collections imported outside factorized/config: {readers}'
