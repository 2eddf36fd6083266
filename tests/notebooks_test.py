"""Every notebook in colabs/ runs top to bottom, at a small size, in a kernel of this Python.

nbclient executes each notebook as a user would, after the test has appended small
values to its "parameters" cell (a few steps, the tiny quick-start network, the
session's synthetic_reid). A cell that raises fails the test with its traceback.
"""
import ast
import glob
import os

import jupyter_client
import nbclient
import nbformat
import pytest
from ipykernel import kernelspec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.ipynb")))
KERNEL = "reid_jax_tests"
# The tiny sizes of tests/conftest.py, a few steps, no evaluation before training.
TINY = {"num_train_steps": 4, "p_identities": 4, "k_instances": 2, "eval_batch_size": 200,
        "model_kwargs.embed_dim": 32, "eval_at_start": False, "log_every_steps": 2}
TINY_KPM = {"num_train_steps": 2, "lr_decay_steps": (), "p_identities": 4, "k_instances": 2,
            "eval_batch_size": 200, "eval_at_start": False, "log_every_steps": 1}
KEPT = {"seed"}  # parameters that cost nothing: the notebook's own value runs


def _small_parameters(tmp_path, data_dir):
  return {"workdir": str(tmp_path / "mlfn"), "kpm_workdir": str(tmp_path / "kpm"),
          "data_dir": data_dir, "overrides": TINY, "kpm_overrides": TINY_KPM, "steps": 3}


def _parameters_cell(nb, path):
  cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(cells) == 1, f"{path}: needs one code cell tagged 'parameters' for CI to shrink"
  return cells[0]


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
  """A kernel spec that starts this interpreter (`sys.executable`), whatever others exist."""
  folder = tmp_path_factory.mktemp("kernels")
  kernelspec.write_kernel_spec(str(folder / KERNEL))
  return jupyter_client.kernelspec.KernelSpecManager(kernel_dirs=[str(folder)])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_the_notebook_is_committed_without_outputs(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_the_notebook_runs_top_to_bottom(path, tmp_path, synthetic_data_dir, kernel_specs):
  nb = nbformat.read(path, as_version=4)
  cell = _parameters_cell(nb, path)
  names = {target.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
           for target in node.targets}
  small = _small_parameters(tmp_path, synthetic_data_dir)
  unknown = names - set(small) - KEPT
  assert not unknown, f"{path}: CI has no small value for the parameters {sorted(unknown)}"
  cell.source += "\n# CI: small\n" + "\n".join(f"{n} = {small[n]!r}" for n in sorted(names - KEPT))
  km = jupyter_client.KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
  client = nbclient.NotebookClient(nb, km=km, timeout=600,
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError naming the cell that failed
  last = [c for c in nb.cells if c.cell_type == "code"][-1]
  assert last.outputs, f"{path}: its last cell shows nothing"
