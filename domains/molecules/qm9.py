"""QM9 as EDM uses it: the 130,831 consistent GDB9 molecules, cormorant's random split.

The raw data comes from the ``qm9pack`` wheel (three CSV files, one row per molecule, the
3,054 molecules that failed the GDB9 consistency check already left out). ``prepare_qm9``
turns them into one compressed ``qm9.npz`` with flat arrays (no pickles):

* ``positions`` float32 [A, 3] (Angstrom) and ``atomic_numbers`` uint8 [A], all molecules
  concatenated in GDB9 order; ``n_atoms`` / ``offsets`` int [M] locate each molecule;
* ``gdb9_index`` [M] (1-based), ``split`` uint8 [M] (0 train, 1 valid, 2 test);
* ``alpha`` (bohr^3), ``gap_au`` (hartree), ``gap_ev`` (x 27.2114, EDM's factor) [M];
* ``smiles`` (the GDB9 SMILES) and ``smiles_edm`` (the SMILES EDM derives from the geometry:
  distance-table bonds, explicit hydrogens, RDKit canonical; "" when not sanitisable),
  both as ASCII bytes with ``*_offsets`` [M + 1];
* ``train_n_atoms_hist`` [max_atoms + 1]: train molecules per atom count.

The split is cormorant's ``gen_splits_gdb9``: the included molecules in GDB9 order,
``np.random.seed(0); perm = np.random.permutation(130831)``, and consecutive slices of
``perm`` of 100,000 (train), 17,748 (valid) and int(0.1 * 130831) = 13,083 (test).
Cormorant maps those positions to molecules through the order of the GDB9 tarball; the
train split built here reproduces EDM's published train statistics exactly (molecules per
atom count and atoms per element in ``configs/datasets_config.py``; see the tests).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domains.molecules.metrics import analyse

N_MOLECULES = 130_831      # GDB9's 133,885 less the 3,054 that failed the consistency check
N_TRAIN = 100_000
SPLITS = ("train", "valid", "test")
HARTREE_TO_EV = 27.2114        # the factor EDM's loader applies to gap / homo / lumo
_SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
Z_TO_SYMBOL = {z: s for s, z in _SYMBOL_TO_Z.items()}


def qm9_data_dir() -> Path:
    """The folder holding qm9pack's CSV files.

    Returns:
        Path to ``.../site-packages/qm9pack/data`` (found without importing qm9pack).
    """
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("QM9 needs the qm9pack wheel: `pip install qm9pack` "
                                "(or `pip install diffplat[molecules]`)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [p for p in _csv_paths(folder) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"qm9pack is installed but {missing[0]} is missing; reinstall "
                                "it with `pip install --force-reinstall qm9pack`")
    return folder


def _csv_paths(folder: Path) -> list[Path]:
    return [folder / f"qm9_part{k}.csv" for k in (1, 2, 3)]


def edm_split(n_molecules: int, n_train: int = N_TRAIN) -> np.ndarray:
    """Cormorant's split as EDM uses it, as a split code per molecule (in GDB9 order).

    Args:
        n_molecules: number of included molecules (130,831 for QM9).
        n_train: training-set size (100,000).

    Returns:
        uint8 [n_molecules]: 0 train, 1 valid, 2 test.
    """
    n_test = int(0.1 * n_molecules)
    n_valid = n_molecules - n_train - n_test
    state = np.random.get_state()
    try:
        np.random.seed(0)
        perm = np.random.permutation(n_molecules)
    finally:
        np.random.set_state(state)
    split = np.empty(n_molecules, dtype=np.uint8)
    split[perm[:n_train]] = 0
    split[perm[n_train:n_train + n_valid]] = 1
    split[perm[n_train + n_valid:]] = 2
    return split


def edm_train_halves(n_molecules: int, n_train: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Cache rows (GDB9 order) of EDM's first and second halves of the training split.

    EDM's training set is ordered as cormorant's ``np.random.seed(0)`` permutation lists it;
    ``qm9/data/utils.py`` then permutes it with ``np.random.seed(42)`` and takes the first
    and second halves."""
    state = np.random.get_state()
    try:
        np.random.seed(0)
        train = np.random.permutation(n_molecules)[:n_train]
        np.random.seed(42)
        fixed = np.random.permutation(len(train))
    finally:
        np.random.set_state(state)
    half = len(train) // 2
    return train[fixed[:half]], train[fixed[half:]]


def _read_csvs(folder: Path) -> dict[str, list]:
    csv.field_size_limit(1 << 30)
    cols = {"Index": [], "N_atoms": [], "Elements": [], "XYZ_Ang": [], "SMILES": [],
            "Polarizability_bohr3": [], "HOMO_LUMO_gap_au": []}
    for path in _csv_paths(folder):
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            where = [(cols[k], header.index(k)) for k in cols]
            for row in reader:
                for dest, i in where:
                    dest.append(row[i])
    return cols


def _pack_strings(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    data = [s.encode("ascii") for s in strings]
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in data], out=offsets[1:])
    return np.frombuffer(b"".join(data), dtype=np.uint8).copy(), offsets


def prepare_qm9(out_dir: Path | str, limit: int | None = None,
                sample_seed: int | None = None) -> list[Path]:
    """Parse qm9pack's CSVs, build EDM's split and write ``out_dir/qm9.npz``.

    Args:
        out_dir: output folder (created if needed).
        limit: keep only ``limit`` molecules (for tests): the first ones in GDB9 order, or a
            random subset when ``sample_seed`` is given. The split is still computed over
            all molecules, so every kept molecule has its full-set split code.
        sample_seed: seed of the random subset (used only with ``limit``).

    Returns:
        ``[out_dir / "qm9.npz"]``.
    """
    out_dir = Path(out_dir)
    cols = _read_csvs(qm9_data_dir())
    gdb = np.array(cols["Index"], dtype=np.int64)
    order = np.argsort(gdb, kind="stable")
    if len(np.unique(gdb)) != len(gdb) or len(gdb) != N_MOLECULES:
        raise ValueError(f"qm9pack CSVs hold {len(gdb)} molecules ({len(np.unique(gdb))} "
                         f"distinct GDB9 indices); EDM's split needs exactly {N_MOLECULES}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    split = edm_split(len(gdb))
    if limit is None:
        rank = np.arange(len(order))            # positions in GDB9 order
    elif sample_seed is None:
        rank = np.arange(min(limit, len(order)))
    else:
        rng = np.random.default_rng(sample_seed)
        rank = np.sort(rng.choice(len(order), size=min(limit, len(order)), replace=False))
    keep = order[rank]                          # rows of the CSVs
    n_atoms = np.array(cols["N_atoms"], dtype=np.int64)[keep]
    listed = [cols["Elements"][k] for k in keep.tolist()]
    if any(e.count(",") + 1 != n for e, n in zip(listed, n_atoms.tolist())):
        raise ValueError("qm9pack CSVs: N_atoms disagrees with the Elements column")
    elements = ",".join(listed)
    symbols = elements.replace("[", "").replace("]", "").replace("'", "").split(",")
    z = np.array([_SYMBOL_TO_Z[s] for s in symbols], dtype=np.uint8)
    coords = ",".join(cols["XYZ_Ang"][k].replace("[", "").replace("]", "")
                      for k in keep.tolist())
    positions = np.array(coords.split(","), dtype=np.float64).astype(np.float32).reshape(-1, 3)
    if len(z) != n_atoms.sum() or len(positions) != len(z):
        raise ValueError("qm9pack CSVs: atom counts, elements and coordinates disagree")
    offsets = np.zeros(len(keep), dtype=np.int64)
    np.cumsum(n_atoms[:-1], out=offsets[1:])
    mols = [(positions[o:o + n], [Z_TO_SYMBOL[int(a)] for a in z[o:o + n]])
            for o, n in zip(offsets.tolist(), n_atoms.tolist())]
    smiles_edm = [s or "" for s in analyse(mols, smiles="whole")["smiles"]]
    split = split[rank]
    # EDM's halves of the training split (its property-MAE protocol), over the full set
    half = np.full(len(gdb), -1, dtype=np.int8)
    half_order = np.full(len(gdb), -1, dtype=np.int32)
    for code, rows in enumerate(edm_train_halves(len(gdb))):
        half[rows] = code
        half_order[rows] = np.arange(len(rows))
    hist = np.bincount(n_atoms[split == 0], minlength=int(n_atoms.max()) + 1)
    gap_au = np.array(cols["HOMO_LUMO_gap_au"], dtype=np.float64)[keep]
    sm, sm_off = _pack_strings([cols["SMILES"][k] for k in keep.tolist()])
    se, se_off = _pack_strings(smiles_edm)
    arrays = dict(positions=positions, atomic_numbers=z, n_atoms=n_atoms.astype(np.int32),
                  offsets=offsets, gdb9_index=gdb[keep].astype(np.int32), split=split,
                  alpha=np.array(cols["Polarizability_bohr3"], dtype=np.float64)[keep],
                  gap_au=gap_au, gap_ev=gap_au * HARTREE_TO_EV,
                  smiles=sm, smiles_offsets=sm_off, smiles_edm=se, smiles_edm_offsets=se_off,
                  train_n_atoms_hist=hist.astype(np.int64),
                  edm_half=half[rank], edm_half_order=half_order[rank])
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "qm9.npz"
    fd, tmp = tempfile.mkstemp(prefix=".qm9-", suffix=".npz", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return [target]


def _unpack(data: np.ndarray, offsets: np.ndarray, i: int) -> str:
    return data[offsets[i]:offsets[i + 1]].tobytes().decode("ascii")


@dataclass(frozen=True)
class QM9Cache:
    """The arrays of a prepared ``qm9.npz`` (see the module docstring for the fields)."""

    arrays: dict[str, np.ndarray]
    path: Path

    def __len__(self) -> int:
        return len(self.arrays["n_atoms"])

    def edm_half(self, which: int) -> np.ndarray:
        """Cache rows of EDM's first (0) or second (1) half of the training split, in EDM's
        order (domains/molecules/property.py)."""
        if which not in (0, 1):
            raise ValueError(f"which must be 0 or 1, not {which!r}")
        if "edm_half" in self.arrays:
            rows = np.nonzero(self.arrays["edm_half"] == which)[0]
            return rows[np.argsort(self.arrays["edm_half_order"][rows], kind="stable")]
        if len(self) == N_MOLECULES:  # a cache written before the halves were stored
            return edm_train_halves(len(self))[which]
        raise ValueError(f"{self.path} holds a subset of QM9 without EDM's halves; prepare "
                         "it again with `diffplat data prepare qm9`")

    def split_indices(self, split: str) -> np.ndarray:
        """Molecule indices (cache rows, GDB9 order) of a split.

        Args:
            split: ``"train"``, ``"valid"`` (or ``"val"``) or ``"test"``.

        Returns:
            int64 indices, ascending.
        """
        name = "valid" if split == "val" else split
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} (or 'val'), not {split!r}")
        return np.nonzero(self.arrays["split"] == SPLITS.index(name))[0]

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions float32 [n, 3] in Angstrom, atomic numbers uint8 [n]) of molecule i."""
        o, n = int(self.arrays["offsets"][i]), int(self.arrays["n_atoms"][i])
        return self.arrays["positions"][o:o + n], self.arrays["atomic_numbers"][o:o + n]

    def symbols(self, i: int) -> list[str]:
        """Element symbols of molecule i."""
        return [Z_TO_SYMBOL[int(z)] for z in self.molecule(i)[1]]

    def molecules(self, indices: np.ndarray | None = None) -> list[tuple[np.ndarray, list[str]]]:
        """(positions, symbols) pairs, the input format of ``metrics.edm_metrics``.

        Args:
            indices: molecule indices (default: all).

        Returns:
            list of (float32 [n, 3] positions, element symbols).
        """
        idx = range(len(self)) if indices is None else np.asarray(indices).tolist()
        return [(self.molecule(i)[0], self.symbols(i)) for i in idx]

    def smiles(self, i: int) -> str:
        """The GDB9 SMILES of molecule i (as listed in QM9)."""
        return _unpack(self.arrays["smiles"], self.arrays["smiles_offsets"], i)

    def edm_smiles(self, i: int) -> str | None:
        """The SMILES EDM derives from molecule i's geometry, None if not sanitisable."""
        return _unpack(self.arrays["smiles_edm"], self.arrays["smiles_edm_offsets"], i) or None

    def train_smiles(self) -> set[str]:
        """EDM's reference set for novelty: the geometry-derived SMILES of the train split.

        EDM builds each training molecule with the same distance-table bonds as generated
        ones (explicit hydrogens, whole molecule) and keeps those RDKit can sanitise; the
        GDB9 SMILES would never match generated ones (no explicit hydrogens).
        """
        found = (self.edm_smiles(int(i)) for i in self.split_indices("train"))
        return {s for s in found if s is not None}

    def n_atoms_histogram(self) -> np.ndarray:
        """Train molecules per atom count: int [max_atoms + 1] (index = atom count)."""
        return self.arrays["train_n_atoms_hist"]


def load_qm9(path: Path | str) -> QM9Cache:
    """Load a ``qm9.npz`` written by ``prepare_qm9`` (no pickles).

    Args:
        path: the file, or the folder holding ``qm9.npz``.

    Returns:
        A ``QM9Cache`` with every array in memory.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "qm9.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `diffplat data prepare molecules`")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    missing = {"positions", "atomic_numbers", "n_atoms", "offsets", "split"} - set(arrays)
    if missing:
        raise ValueError(f"{path} is not a QM9 cache (missing {sorted(missing)})")
    return QM9Cache(arrays, path)


def describe_qm9(path: Path | str) -> dict[str, Any]:
    """A JSON-ready summary of a prepared cache (for ``diffplat data info``).

    Args:
        path: the ``qm9.npz`` file or its folder.

    Returns:
        dict with the file and its size, molecules per split, atoms-per-molecule stats,
        atom counts per element, and the property ranges.
    """
    t0 = time.perf_counter()
    cache = load_qm9(path)
    a, n = cache.arrays, cache.arrays["n_atoms"]
    z, counts = np.unique(a["atomic_numbers"], return_counts=True)
    prop = {k: {"min": float(a[k].min()), "mean": float(a[k].mean()), "max": float(a[k].max())}
            for k in ("alpha", "gap_ev") if k in a and len(a[k])}
    return {
        "file": str(cache.path), "size_mb": round(cache.path.stat().st_size / 2**20, 1),
        "molecules": len(cache), "atoms": int(n.sum()),
        "splits": {s: int((a["split"] == k).sum()) for k, s in enumerate(SPLITS)},
        "atoms_per_molecule": {"min": int(n.min()), "mean": round(float(n.mean()), 3),
                               "median": float(np.median(n)), "max": int(n.max())},
        "elements": {Z_TO_SYMBOL.get(int(k), str(k)): int(c) for k, c in zip(z, counts)},
        "properties": prop,
        "load_seconds": round(time.perf_counter() - t0, 2),
    }
