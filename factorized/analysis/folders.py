"""A results folder's description: its findings.json (`Folder`), which the findings and the
README headline read beside the folder's data, so that a second corpus or protocol is a few
lines of data rather than code.

findings.json fields, all optional: title; corpus; protocol (a sentence: how the points were
trained and evaluated); reference (the kind every gap is measured from: dense); budget and
budget_slack (the headline's vocabulary budget, fractions of the reference's); thresholds
(the "within x%" levels); byte_shares (the memory front's budgets, fractions of the
reference's float32 vocabulary bytes); panel and beside (the headline figure's panel title,
and a sibling results folder drawn beside this one); markers (the README block's name);
config ({dotted field: value} every point's config holds); anchors (published perplexities
with the vocabulary size and the test tokens they were measured on).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from factorized.analysis import table as sweep_table
from factorized.config import migrate as migrate_lib

FINDINGS_FILE = 'README.md'  # the full findings, in the results folder itself
DESCRIPTION_FILE = 'findings.json'


@dataclasses.dataclass(frozen=True)
class Anchor:
  """A published test perplexity and the protocol it was measured under."""

  name: str
  test_ppl: float
  vocab_size: int
  test_tokens: int
  source: str = ''


@dataclasses.dataclass(frozen=True)
class Folder:
  """A results folder's description (its findings.json): what its findings need besides
  the data. `config`: {dotted field: value} every point's config must hold (a field a
  summary does not record, even migrated, passes); `markers`: the README block's name."""

  root: pathlib.Path
  title: str = 'Results'
  corpus: str = ''
  protocol: str = ''
  reference: str = 'dense'
  budget: float = 0.25  # the headline's vocabulary budget, a fraction of the reference's
  budget_slack: float = 0.05  # points up to this much above the budget count as within it
  thresholds: tuple[float, ...] = (0.02, 0.05)
  # The memory front's budgets (memory.py): fractions of the reference's float32 bytes.
  byte_shares: tuple[float, ...] = (0.25, 0.10, 0.03)
  panel: str = ''  # the protocol's name as a figure panel's title
  # Another results folder (a sibling's name) whose protocol the headline figure draws beside
  # this one's, each kind at its tuned configuration (PROTOCOLS_PNG_FILE).
  beside: str = ''
  markers: str = ''
  config: dict[str, Any] = dataclasses.field(default_factory=dict)
  anchors: tuple[Anchor, ...] = ()

  @classmethod
  def load(cls, root: str | pathlib.Path) -> Folder:
    """The description in `root`/findings.json (the defaults where it has none)."""
    root = pathlib.Path(root)
    path = root / DESCRIPTION_FILE
    fields = json.loads(path.read_text()) if path.exists() else {}
    known = {f.name for f in dataclasses.fields(cls)} - {'root'}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f'{path}: unknown fields {unknown}; known: {sorted(known)}.')
    anchors = tuple(Anchor(**anchor) for anchor in fields.pop('anchors', ()))
    thresholds = tuple(fields.pop('thresholds', cls.thresholds))
    byte_shares = tuple(fields.pop('byte_shares', cls.byte_shares))
    return cls(root=root, anchors=anchors, thresholds=thresholds, byte_shares=byte_shares,
               **fields)

  @property
  def sibling(self) -> Folder | None:
    """The folder `beside` names (None without one)."""
    return Folder.load(self.root.parent / self.beside) if self.beside else None

  @property
  def name(self) -> str:
    """The README block's name: `markers`, or 'results:<folder> headline'."""
    return self.markers or f'results:{self.root.name} headline'

  @property
  def command(self) -> str:
    """The command that regenerates the folder's findings and README block."""
    return f'python -m factorized.analysis.findings {self.root.as_posix()} --readme=README.md'

  @property
  def generated(self) -> str:
    """What the generated text says of where it comes from."""
    return (f'generated from {self.root.as_posix()} by `{self.command}`; do not edit by hand')

  @property
  def header(self) -> str:
    """The start of the folder's FINDINGS_FILE."""
    return f'# {self.title}\n\n<!-- {self.generated} -->\n'

  @property
  def begin(self) -> str:
    """The README marker the folder's headline block starts at."""
    return f'<!-- {self.name} begin: {self.generated} -->'

  @property
  def end(self) -> str:
    """The README marker the folder's headline block ends at."""
    return f'<!-- {self.name} end -->'


def check_config(folder: Folder) -> None:
  """Every point's config holds the description's `config` values (fails naming the run)."""
  if not folder.config:
    return
  for run_dir in sweep_table.run_dirs(folder.root):
    path = run_dir / 'summary.json'
    if not path.exists():
      continue
    config = migrate_lib.migrate(json.loads(path.read_text())['config'])
    for field, expected in folder.config.items():
      value: Any = config
      for part in field.split('.'):
        value = value.get(part) if isinstance(value, dict) else None
      if value is not None and value != expected:
        raise ValueError(f'{run_dir}: {field}={value!r}, but {folder.root / DESCRIPTION_FILE} '
                         f'says every point of this folder has {field}={expected!r}; move the '
                         'run to the folder of its protocol.')
