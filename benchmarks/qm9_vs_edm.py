"""QM9 molecules side by side with EDM's reference code, at the same size and minutes.

Runs EDM's own code (Hoogeboom et al. 2022, github.com/ehoogeboom/e3_diffusion_for_molecules,
MIT licence) from ``--edm-dir``: its ``EGNN_dynamics_QM9`` + ``EnVariationalDiffusion`` built
by its ``qm9.models.get_model`` at our size (4 layers x 64 hidden by default), trained with its
training step (``train_test.train_epoch``: ``qm9.losses.compute_loss_and_nll``, loss = nll +
1e-3 x reg, its ``get_optim`` (AdamW, amsgrad, lr 1e-4), EMA 0.999, its adaptive gradient
clipping) for ``--minutes`` wall-clock minutes on the same training molecules as ours (the
first ``--max-train`` of our QM9 cache, collated by EDM's ``PreprocessQM9``), then sampled
with its own 1000-step ancestral sampler (``qm9.sampling.sample``; sizes from its
``DistributionNodes`` over the same molecules). Every molecule drawn is scored, unfiltered,
by OUR metric (``MoleculeDomain.metrics`` = ``domains.molecules.metrics.edm_metrics``).

Ours is either trained here (``diffplat fit -c configs/molecules/qm9-tiny.yaml``, ``diffplat
sample``, ``diffplat evaluate`` as subprocesses into ``--work-dir``) or read from a finished
run, ``--ours RUN_DIR`` (``make demo DEMO_DIR=RUN_DIR``: metrics.json, samples/meta.json,
checkpoints/last.ckpt). By default EDM trains for as many minutes as our run's training took.

    python benchmarks/qm9_vs_edm.py --ours runs/demo                 # reuse make demo's run
    python benchmarks/qm9_vs_edm.py --work-dir runs/vs-edm            # train ours here too
    python benchmarks/qm9_vs_edm.py --ours runs/demo --edm-dir ~/e3_diffusion_for_molecules

EDM's code is imported at run time from ``--edm-dir`` (default ``../shared/anchors/edm``
next to the repository root, or ``$DIFFPLAT_EDM_DIR``); nothing of it is copied here. Run-time
adaptations, none of which changes EDM's computation:

* EDM's repository-root ``utils.py`` (its ``Queue`` / ``gradient_clipping``) is loaded from
  the clone when present; a copy holding only ``egnn/``, ``equivariant_diffusion/`` and
  ``qm9/`` lacks it, and then ``_Queue`` / ``_gradient_clipping`` below re-state those two
  functions (commit fce07d7: max norm = 1.5 x mean + 2 x std of the last 50 norms, the queue
  seeded with 3000).
* ``configs.datasets_config`` (EDM's dataset table) is not needed: the ``dataset_info`` dict
  is built from the training molecules (EDM's keys: atom_encoder/decoder, n_nodes,
  max_n_nodes).
* ``wandb`` and ``imageio`` are replaced by empty stub modules only if importing EDM's
  modules fails for their absence (neither is called on the path used here).
* EDM's sampler is counted by wrapping the instance's ``dynamics._forward`` (a counter,
  nothing else), to report its NFE.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shlex
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from domains.molecules.features import QM9_ELEMENTS, SYMBOL_TO_Z, Molecule  # noqa: E402

DEFAULT_EDM_DIR = ROOT.parent / "shared" / "anchors" / "edm"
EDM_NEEDS = ("egnn/models.py", "equivariant_diffusion/en_diffusion.py", "qm9/models.py",
             "qm9/losses.py", "qm9/sampling.py", "qm9/data/collate.py")
EDM_PACKAGES = ("egnn", "equivariant_diffusion", "qm9")
STUBBABLE = ("wandb", "imageio")     # imported by EDM modules, never called on our path
METRICS = ("atom_stability", "mol_stability", "validity", "uniqueness")


def default_edm_dir() -> Path:
    """``$DIFFPLAT_EDM_DIR``, else ``../shared/anchors/edm`` next to the repository root."""
    env = os.environ.get("DIFFPLAT_EDM_DIR")
    return Path(env) if env else DEFAULT_EDM_DIR


def edm_missing(edm_dir: Path | str) -> list[str]:
    """The files EDM's side needs that ``edm_dir`` lacks (empty when usable)."""
    return [f for f in EDM_NEEDS if not (Path(edm_dir) / f).is_file()]


# -- EDM's code, imported at run time ---------------------------------------------------------
def import_edm(edm_dir: Path | str) -> types.SimpleNamespace:
    """Put ``edm_dir`` first on sys.path and import what is used of EDM's code."""
    edm_dir = Path(edm_dir).resolve()
    missing = edm_missing(edm_dir)
    if missing:
        raise FileNotFoundError(f"{edm_dir} is not a copy of EDM's code (missing "
                                f"{', '.join(missing)}); clone github.com/ehoogeboom/"
                                "e3_diffusion_for_molecules and pass --edm-dir")
    for name in EDM_PACKAGES:    # an earlier import from elsewhere would shadow EDM's
        mod = sys.modules.get(name)
        where = getattr(mod, "__file__", None) or next(iter(getattr(mod, "__path__", [])),
                                                       "")   # a namespace package: no file
        if mod is not None and not Path(where).resolve().is_relative_to(edm_dir):
            raise RuntimeError(f"module {name!r} is already imported from {where}, not "
                               f"from {edm_dir}")
    if str(edm_dir) not in sys.path:
        sys.path.insert(0, str(edm_dir))
    stubbed = []
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)  # EDM's `is` with literals
                warnings.simplefilter("ignore", DeprecationWarning)  # and its '\\e' escape
                from egnn.models import EGNN_dynamics_QM9
                from equivariant_diffusion import utils as diffusion_utils
                from equivariant_diffusion.en_diffusion import EnVariationalDiffusion
                from qm9 import losses, sampling
                from qm9 import models as qm9_models
                from qm9.data.collate import PreprocessQM9
            break
        except ModuleNotFoundError as err:
            if err.name not in STUBBABLE or err.name in stubbed:
                raise
            sys.modules[err.name] = types.ModuleType(err.name)
            stubbed.append(err.name)
    queue_cls, clip_fn = _Queue, _gradient_clipping
    root_utils = edm_dir / "utils.py"
    if root_utils.is_file():     # a full clone: EDM's own gradient clipping
        spec = importlib.util.spec_from_file_location("_edm_root_utils", root_utils)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        queue_cls, clip_fn = mod.Queue, mod.gradient_clipping
    return types.SimpleNamespace(
        EGNN_dynamics_QM9=EGNN_dynamics_QM9, EnVariationalDiffusion=EnVariationalDiffusion,
        utils=diffusion_utils, losses=losses, models=qm9_models, sampling=sampling,
        PreprocessQM9=PreprocessQM9, Queue=queue_cls, gradient_clipping=clip_fn,
        own_clipping=root_utils.is_file(), stubbed=stubbed, path=edm_dir)


class _Queue:
    """EDM's ``utils.Queue`` (the last ``max_len`` gradient norms), re-stated for copies of
    EDM without its root utils.py."""

    def __init__(self, max_len: int = 50):
        self.items: list[float] = []
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: float) -> None:
        self.items.insert(0, item)
        if len(self) > self.max_len:
            self.items.pop()

    def mean(self) -> float:
        return float(np.mean(self.items))

    def std(self) -> float:
        return float(np.std(self.items))


def _gradient_clipping(flow: torch.nn.Module, gradnorm_queue: _Queue) -> torch.Tensor:
    """EDM's ``utils.gradient_clipping``: clip to 1.5 x mean + 2 x std of recent norms."""
    max_grad_norm = 1.5 * gradnorm_queue.mean() + 2 * gradnorm_queue.std()
    grad_norm = torch.nn.utils.clip_grad_norm_(flow.parameters(), max_norm=max_grad_norm,
                                               norm_type=2.0)
    gradnorm_queue.add(float(min(float(grad_norm), max_grad_norm)))
    return grad_norm


# -- data: our QM9 cache in EDM's batch format ------------------------------------------------
def qm9_domain(data: str, max_train: int | None):
    """Our QM9 domain as qm9-tiny.yaml builds it (its train split: the first ``max_train``
    molecules of EDM's training split), loaded."""
    from domains.molecules.domain import MoleculeDomain

    domain = MoleculeDomain(data_path=data, max_train=max_train, max_eval=1)
    domain.setup("fit")
    return domain


def training_molecules(domain) -> list[Molecule]:
    """The training molecules ours sees, as our molecules (positions as stored, symbols)."""
    elements = domain.featurizer.elements
    if tuple(elements) != QM9_ELEMENTS:
        raise ValueError(f"EDM's QM9 with hydrogens uses {QM9_ELEMENTS}, the data {elements}")
    return [Molecule(pos.numpy(), [elements[t] for t in typ.tolist()])
            for pos, typ in domain._splits["train"]]


def edm_item(mol: Molecule) -> dict[str, torch.Tensor]:
    """One molecule as EDM's ``ProcessedDataset`` yields it (QM9 with H): ``positions``
    float [n, 3], ``charges`` (atomic numbers) int64 [n], ``one_hot`` bool [n, 5] over
    H, C, N, O, F, ``num_atoms``."""
    z = torch.tensor([SYMBOL_TO_Z[s] for s in mol.symbols], dtype=torch.int64)
    species = torch.tensor([SYMBOL_TO_Z[s] for s in QM9_ELEMENTS], dtype=torch.int64)
    return {"num_atoms": torch.tensor(len(mol)),
            "charges": z,
            "positions": torch.as_tensor(np.asarray(mol.positions), dtype=torch.float32),
            "one_hot": z[:, None] == species[None, :]}


def edm_batch(edm, mols: list[Molecule]) -> dict[str, torch.Tensor]:
    """Molecules -> EDM's batch dict through its own ``PreprocessQM9.collate_fn``."""
    return edm.PreprocessQM9(load_charges=True).collate_fn([edm_item(m) for m in mols])


def edm_to_molecules(one_hot: torch.Tensor, x: torch.Tensor,
                     node_mask: torch.Tensor) -> list[Molecule]:
    """EDM's (one_hot [B, n, 5], x [B, n, 3], node_mask [B, n(, 1)]) -> our molecules: the
    masked atoms, the element the argmax of the one-hot names (EDM's own decoding in
    ``qm9/analyze.py``)."""
    mask = node_mask.reshape(node_mask.shape[0], -1).bool().cpu()
    types_ = one_hot.float().argmax(-1).cpu()
    x = x.detach().cpu().double()
    out = []
    for i in range(len(mask)):
        keep = mask[i]
        out.append(Molecule(x[i][keep].numpy(),
                            [QM9_ELEMENTS[int(t)] for t in types_[i][keep].tolist()]))
    return out


def dataset_info(mols: list[Molecule]) -> dict[str, Any]:
    """EDM's ``dataset_info`` for QM9 with H, its ``n_nodes`` histogram over ``mols``."""
    sizes, counts = np.unique([len(m) for m in mols], return_counts=True)
    return {"name": "qm9", "atom_decoder": list(QM9_ELEMENTS),
            "atom_encoder": {s: i for i, s in enumerate(QM9_ELEMENTS)},
            "n_nodes": {int(n): int(c) for n, c in zip(sizes, counts)},
            "max_n_nodes": int(sizes.max()), "with_h": True}


def edm_args(layers: int, hidden: int, steps: int, lr: float, ema: float) -> argparse.Namespace:
    """EDM's main_qm9.py arguments as its README's QM9 run sets them (polynomial_2, precision
    1e-5, l2, normalize_factors [1, 4, 10], lr 1e-4), at our size; its parser's defaults
    otherwise (egnn_dynamics, inv_sublayers 1, attention, tanh, norm_constant 1,
    normalization_factor 1, sum aggregation, charges, time conditioning, EMA 0.999,
    ode_regularization 1e-3, gradient clipping)."""
    return argparse.Namespace(
        model="egnn_dynamics", probabilistic_model="diffusion", diffusion_steps=steps,
        diffusion_noise_schedule="polynomial_2", diffusion_noise_precision=1e-5,
        diffusion_loss_type="l2", n_layers=layers, nf=hidden, inv_sublayers=1, tanh=True,
        attention=True, norm_constant=1, sin_embedding=False, ode_regularization=1e-3,
        normalize_factors=[1, 4, 10], include_charges=True, condition_time=True,
        conditioning=[], context_node_nf=0, normalization_factor=1, aggregation_method="sum",
        lr=lr, ema_decay=ema, clip_grad=True, augment_noise=0, data_augmentation=False,
        batch_size=64, dataset="qm9", remove_h=False)


# -- EDM: train for M minutes, sample, score --------------------------------------------------
def run_edm(args, mols: list[Molecule], domain, log=print) -> dict[str, Any]:
    import copy

    edm = import_edm(args.edm_dir)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device(args.device)
    info = dataset_info(mols)
    eargs = edm_args(args.edm_layers, args.edm_hidden, args.edm_steps, args.edm_lr,
                     args.edm_ema)
    eargs.batch_size = args.batch_size
    collate = edm.PreprocessQM9(load_charges=True).collate_fn
    items = [edm_item(m) for m in mols]
    loader = torch.utils.data.DataLoader(items, batch_size=args.batch_size, shuffle=True,
                                         collate_fn=collate)
    with contextlib.redirect_stdout(io.StringIO()):  # EDM prints its schedule's arrays
        model, nodes_dist, _ = edm.models.get_model(eargs, device, info, loader)
    model = model.to(device)
    optim = edm.models.get_optim(eargs, model)
    queue = edm.Queue()
    queue.add(3000)                          # main_qm9.py: a large value that is flushed
    model_ema = copy.deepcopy(model)
    ema = edm.utils.EMA(eargs.ema_decay)
    params = sum(p.numel() for p in model.parameters())
    log(f"EDM: {edm.path} ({'its' if edm.own_clipping else 'our re-stated'} gradient "
        f"clipping{', stubs: ' + ', '.join(edm.stubbed) if edm.stubbed else ''}), EGNN "
        f"{args.edm_layers} x {args.edm_hidden} ({params / 1e6:.3f}M parameters), "
        f"{args.edm_steps} diffusion steps, {len(mols)} training molecules, "
        f"{args.minutes:.2f} minutes")
    dtype = torch.float32
    steps, losses = 0, []
    t0 = time.perf_counter()
    deadline = t0 + 60.0 * args.minutes
    model.train()
    while time.perf_counter() < deadline:
        for data in loader:                  # train_test.train_epoch, one batch
            x = data["positions"].to(device, dtype)
            node_mask = data["atom_mask"].to(device, dtype).unsqueeze(2)
            edge_mask = data["edge_mask"].to(device, dtype)
            one_hot = data["one_hot"].to(device, dtype)
            charges = data["charges"].to(device, dtype)
            x = edm.utils.remove_mean_with_mask(x, node_mask)
            edm.utils.assert_mean_zero_with_mask(x, node_mask)
            h = {"categorical": one_hot, "integer": charges}
            optim.zero_grad()
            nll, reg_term, _ = edm.losses.compute_loss_and_nll(
                eargs, model, nodes_dist, x, h, node_mask, edge_mask, None)
            loss = nll + eargs.ode_regularization * reg_term
            loss.backward()
            edm.gradient_clipping(model, queue)
            optim.step()
            ema.update_model_average(model_ema, model)
            steps += 1
            losses.append(float(loss.detach()))
            if steps % 100 == 0:
                log(f"EDM step {steps}: loss {np.mean(losses[-100:]):.3f} "
                    f"({time.perf_counter() - t0:.0f} s)")
            if time.perf_counter() >= deadline:
                break
    train_seconds = time.perf_counter() - t0
    log(f"EDM trained {steps} steps in {train_seconds:.0f} s; sampling {args.num} molecules "
        f"with its {args.edm_steps}-step sampler")
    # sampling: EDM's qm9.sampling.sample with the EMA model, sizes from DistributionNodes
    model_ema.eval()
    calls = [0]
    forward = model_ema.dynamics._forward

    def counted(*a, **k):
        calls[0] += 1
        return forward(*a, **k)

    model_ema.dynamics._forward = counted    # a counter, for the NFE column
    samples, nfe = [], []
    t1 = time.perf_counter()
    for start in range(0, args.num, args.batch_size):
        n = min(args.batch_size, args.num - start)
        sizes = nodes_dist.sample(n)
        calls[0] = 0
        one_hot, _charges, x, node_mask = edm.sampling.sample(
            eargs, device, model_ema, info, prop_dist=None, nodesxsample=sizes)
        nfe.append(calls[0])
        got = edm_to_molecules(one_hot, x, node_mask)
        if [len(m) for m in got] != sizes.tolist():
            raise RuntimeError("EDM's sample sizes disagree with the drawn node counts")
        samples.extend(got)
        log(f"EDM sampled {len(samples)}/{args.num} ({time.perf_counter() - t1:.0f} s)")
    sample_seconds = time.perf_counter() - t1
    metrics = domain.metrics(samples)
    return {"method": "EDM (reference code)", "train_minutes": train_seconds / 60,
            "steps": steps, "nfe": int(max(nfe)), "sample_seconds": sample_seconds,
            "final_loss": float(np.mean(losses[-50:])) if losses else None,
            "parameters": params, "num": len(samples), "edm_dir": str(edm.path),
            "metrics": {k: float(metrics[k]) for k in (*METRICS, "valid_and_unique")
                        if k in metrics},
            "_samples": samples}


# -- ours: a finished run or one trained here --------------------------------------------------
def _diffplat(*argv: str, threads: int | None = None) -> None:
    cmd = [sys.executable, "-c", "import sys; from diffplat.cli import main; "
           "sys.exit(main(sys.argv[1:]))", *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if threads:                               # the same threads as EDM's side
        env["OMP_NUM_THREADS"] = str(threads)
    print("$ diffplat " + " ".join(argv), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)


def train_ours(args) -> Path:
    run = Path(args.work_dir).resolve()
    t0 = time.perf_counter()
    _diffplat("fit", "-c", args.config, "--trainer.default_root_dir", str(run),
              *args.ours_arg, threads=args.threads)
    fit_seconds = time.perf_counter() - t0
    _diffplat("sample", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--num",
              str(args.num), "--sampler", args.sampler, *shlex.split(args.sampler_args),
              "--steps", str(args.sampler_steps),
              "--seed", str(args.seed), "--overwrite", "--out", str(run / "samples"),
              "--no-progress",
              threads=args.threads)
    _diffplat("evaluate", "--samples", str(run / "samples"), "--json",
              str(run / "metrics.json"), threads=args.threads)
    (run / "fit_wall.json").write_text(json.dumps({"fit_process_seconds": fit_seconds}))
    return run


def read_ours(run: Path) -> dict[str, Any]:
    """Our figures from a run folder: metrics.json (``diffplat evaluate``), samples/meta.json
    (``diffplat sample``) and the checkpoint's training record (steps, seconds)."""
    from diffplat.store import read_checkpoint

    run = Path(run)
    need = [run / "metrics.json", run / "checkpoints" / "last.ckpt"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--ours {run}: missing {', '.join(missing)} (make demo "
                                "DEMO_DIR=... writes them)")
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    record = (read_checkpoint(run / "checkpoints" / "last.ckpt").get("diffplat") or {}).get(
        "train_record") or {}
    meta_file = run / "samples" / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    wall = run / "fit_wall.json"
    out = {"method": "diffplat (ours)",
           "train_minutes": float(record["seconds"]) / 60 if record.get("seconds") else None,
           "steps": record.get("steps"), "nfe": meta.get("nfe"),
           "sampler": meta.get("sampler"), "sample_seconds": meta.get("seconds"),
           "num": metrics.get("n_molecules"), "run_dir": str(run),
           "metrics": {k: float(metrics[k]) for k in (*METRICS, "valid_and_unique")
                       if k in metrics}}
    if wall.is_file():
        out["fit_process_minutes"] = json.loads(wall.read_text())["fit_process_seconds"] / 60
    return out


# -- the table --------------------------------------------------------------------------------
def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None where either is unknown or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(ours: dict[str, Any] | None, edm: dict[str, Any]) -> str:
    def fmt(v, pct=False, digits=2):
        if v is None:
            return "n/a"
        return f"{100 * v:.1f}%" if pct else (f"{v:.{digits}f}" if isinstance(v, float)
                                              else str(v))

    head = (f"{'method':<22} {'train min':>9} {'steps':>7} {'NFE':>5} {'atom st.':>9} "
            f"{'mol st.':>8} {'valid':>7} {'unique':>7}")
    rows = [head]
    for r in ([ours] if ours else []) + [edm]:
        m = r["metrics"]
        rows.append(f"{r['method']:<22} {fmt(r['train_minutes']):>9} {fmt(r['steps']):>7} "
                    f"{fmt(r['nfe']):>5} {fmt(m.get('atom_stability'), True):>9} "
                    f"{fmt(m.get('mol_stability'), True):>8} "
                    f"{fmt(m.get('validity'), True):>7} {fmt(m.get('uniqueness'), True):>7}")
    if ours:
        q = ratios(ours, edm)
        rows.append(f"{'ratio ours / EDM':<22} {fmt(q['train_minutes']):>9} "
                    f"{fmt(q['steps']):>7} {fmt(q['nfe'], digits=3):>5} "
                    + " ".join(f"{fmt(q[k]):>{w}}" for k, w in
                               zip(METRICS, (9, 8, 7, 7))))
    return "\n".join(rows)


def ratios(ours: dict[str, Any], edm: dict[str, Any]) -> dict[str, float | None]:
    out = {k: ratio(ours.get(k), edm.get(k)) for k in ("train_minutes", "steps", "nfe")}
    out.update({k: ratio(ours["metrics"].get(k), edm["metrics"].get(k)) for k in METRICS})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edm-dir", type=Path, default=default_edm_dir(),
                   help="a clone (or copy) of EDM's code (default: $DIFFPLAT_EDM_DIR or "
                        "../shared/anchors/edm next to the repository root)")
    p.add_argument("--ours", type=Path, default=None, metavar="RUN_DIR",
                   help="a finished run (make demo DEMO_DIR=RUN_DIR); default: train ours here")
    p.add_argument("--no-ours", action="store_true", help="run EDM's side only")
    p.add_argument("--work-dir", default="runs/qm9-vs-edm", help="where ours is trained")
    p.add_argument("--config", default="configs/molecules/qm9-tiny.yaml")
    p.add_argument("--ours-arg", action="append", default=[], metavar="ARG",
                   help="an extra argument for our `diffplat fit` (repeat; e.g. "
                        "--ours-arg=--trainer.max_steps=50)")
    p.add_argument("--sampler", default="euler_anneal", help="our sampler (make demo's)")
    p.add_argument("--sampler-args", default="--spacing arcsin -o level_min=0.001",
                   help="more `diffplat sample` flags for our sampler (make demo's: the "
                        "arcsin grid)")
    p.add_argument("--sampler-steps", type=int, default=100, help="our sampler's steps")
    p.add_argument("--minutes", type=float, default=None,
                   help="EDM's training wall-clock minutes (default: our run's training time)")
    p.add_argument("--num", type=int, default=200, help="molecules drawn per side")
    p.add_argument("--data", default="data/qm9/qm9.npz")
    p.add_argument("--max-train", type=int, default=20000, help="as qm9-tiny.yaml")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--edm-layers", type=int, default=4)
    p.add_argument("--edm-hidden", type=int, default=64)
    p.add_argument("--edm-steps", type=int, default=1000, help="EDM's diffusion steps")
    p.add_argument("--edm-lr", type=float, default=1e-4)
    p.add_argument("--edm-ema", type=float, default=0.999)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    if args.num < 1:
        p.error("--num must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if edm_missing(args.edm_dir):
        p.error(f"--edm-dir {args.edm_dir}: not EDM's code (missing "
                f"{', '.join(edm_missing(args.edm_dir))})")
    data = args.data if Path(args.data).is_absolute() else str(ROOT / args.data)
    ours = None
    if not args.no_ours:
        run = args.ours if args.ours is not None else train_ours(args)
        ours = read_ours(run)
    if args.minutes is None:
        if ours is None or ours["train_minutes"] is None:
            p.error("give --minutes (no run of ours to take the training time from)")
        args.minutes = ours["train_minutes"]
    domain = qm9_domain(data, args.max_train)
    mols = training_molecules(domain)
    edm = run_edm(args, mols, domain)
    edm.pop("_samples")
    print(f"\nQM9, {args.num} molecules per side, scored by diffplat's metric (no filtering); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}")
    print(table(ours, edm))
    if ours and ours.get("fit_process_minutes"):
        print(f"our `diffplat fit` process: {ours['fit_process_minutes']:.2f} minutes of wall "
              "time (start-up and data loading included; train min is the fit's own clock)")
    print(f"sampling: ours {ours['sample_seconds'] if ours else 'n/a'} s, EDM "
          f"{edm['sample_seconds']:.1f} s")
    if args.json:
        out = {"ours": ours, "edm": edm, "ratio": ratios(ours, edm) if ours else None,
               "threads": torch.get_num_threads(), "device": args.device,
               "minutes": args.minutes, "num": args.num}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
