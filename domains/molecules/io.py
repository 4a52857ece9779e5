"""Reading users' molecule files (.sdf, .xyz) and writing ours.

``read_molecules`` accepts one file or a folder (its ``*.sdf`` and ``*.xyz`` files, sorted
by name; other files in the folder are ignored). SDF files may hold many records (``$$$$``
separated, V2000 or V3000); they are parsed by RDKit without sanitisation and with explicit
hydrogens kept, so unusual molecules still load. XYZ files may hold many frames.

A bad record raises ``ValueError`` naming the file, the record (1-based) and the reason; with
``skip_bad=True`` it is skipped instead and counted under its reason in ``.skipped`` of the
returned list. Reasons:

* ``malformed``: the record cannot be parsed (bad counts line, truncated frame, bad number);
* ``element``: an element outside the given vocabulary (or an unknown symbol);
* ``one_atom``: a single-atom "molecule";
* ``not_molecule_file``: the file is not a molecule file at all (wrong extension when given
  directly, binary data, or text with no molecule record in it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase

EXTENSIONS = (".sdf", ".xyz")
REASONS = ("malformed", "element", "one_atom", "not_molecule_file")
_PT = Chem.GetPeriodicTable()
SYMBOL_TO_Z = {_PT.GetElementSymbol(z): z for z in range(1, 119)}
_BOND = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE,
         4: Chem.BondType.AROMATIC, 1.5: Chem.BondType.AROMATIC}

#: one molecule as read: (positions float64 [n, 3] in Angstrom, element symbols, name)
Record = tuple[np.ndarray, list[str], str]


class MoleculeList(list):
    """A list of ``Record`` with ``skipped``: {reason: count} of the records left out,
    ``errors`` (their messages) and, per record kept, ``charges`` (the formal charges an
    SDF gives, zeros for XYZ)."""

    def __init__(self, items=()):
        super().__init__(items)
        self.skipped: dict[str, int] = {}
        self.errors: list[str] = []
        self.charges: list[list[int]] = []


class _Bad(Exception):
    def __init__(self, reason: str, detail: str, record: int | None):
        super().__init__(detail)
        self.reason, self.detail, self.record = reason, detail, record


def read_molecules(path: Path | str, skip_bad: bool = False,
                   elements: Collection[str] | None = None) -> MoleculeList:
    """Read every molecule of an .sdf / .xyz file or of a folder of them.

    Args:
        path: a file, or a folder whose ``*.sdf`` / ``*.xyz`` files are read in name order.
        skip_bad: skip bad records (counted per reason in ``result.skipped``, messages in
            ``result.errors``) instead of raising.
        elements: allowed element symbols; None accepts any element.

    Returns:
        ``MoleculeList`` of (positions float64 [n, 3], symbols, name); the name is the SDF
        title / XYZ comment line, or ``"<file stem>:<record>"`` when that is empty.

    Raises:
        ValueError: a bad record (unless ``skip_bad``), naming file, record and reason.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file()
                       and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{path}: no .sdf or .xyz files in this folder")
    else:
        files = [path]
    out = MoleculeList()
    allowed = None if elements is None else set(elements)
    for file in files:
        for item in _read_file(file, allowed):
            if isinstance(item, _Bad):
                where = f"record {item.record}: " if item.record is not None else ""
                message = f"{file}: {where}{item.reason}: {item.detail}"
                if not skip_bad:
                    raise ValueError(message)
                out.skipped[item.reason] = out.skipped.get(item.reason, 0) + 1
                out.errors.append(message)
            else:
                record, charges = item
                out.append(record)
                out.charges.append(charges)
    return out


def _read_file(file: Path, allowed: set[str] | None):
    suffix = file.suffix.lower()
    if suffix not in EXTENSIONS:
        yield _Bad("not_molecule_file", f"extension {file.suffix!r} is not one of "
                                        f"{', '.join(EXTENSIONS)}", None)
        return
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        yield _Bad("not_molecule_file", "binary data, not a text molecule file", None)
        return
    records = _sdf_records(file, text) if suffix == ".sdf" else _xyz_records(file, text)
    for item in records:
        if not isinstance(item, _Bad):
            pos, symbols, name, k, charges = item
            item = _check(pos, symbols, name or f"{file.stem}:{k}", k, allowed)
            if not isinstance(item, _Bad):
                item = (item, charges or [0] * len(symbols))
        yield item


def _check(pos: np.ndarray, symbols: list[str], name: str, k: int,
           allowed: set[str] | None) -> Record | _Bad:
    unknown = [s for s in symbols if s not in SYMBOL_TO_Z]
    if unknown:
        return _Bad("element", f"unknown element symbol {unknown[0]!r}", k)
    if allowed is not None:
        outside = sorted(set(symbols) - allowed)
        if outside:
            return _Bad("element", f"element(s) {', '.join(outside)} outside the vocabulary "
                                   f"{sorted(allowed)}", k)
    if len(symbols) == 1:
        return _Bad("one_atom", "a single atom is not a molecule", k)
    if not np.isfinite(pos).all():
        return _Bad("malformed", "non-finite coordinates", k)
    return pos, symbols, name


def _sdf_records(file: Path, text: str):
    chunks, current = [], []
    for line in text.splitlines():
        if line.strip() == "$$$$":
            chunks.append("\n".join(current) + "\n")
            current = []
        else:
            current.append(line)
    if any(s.strip() for s in current):
        chunks.append("\n".join(current) + "\n")
    if not chunks or not any("M  END" in c for c in chunks):
        yield _Bad("not_molecule_file", "no MDL record (no 'M  END' line) in this file", 1)
        return
    with rdBase.BlockLogs():
        for k, block in enumerate(chunks, start=1):
            try:
                mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
            except (ValueError, RuntimeError):
                mol = None
            if mol is None or mol.GetNumAtoms() == 0 or mol.GetNumConformers() == 0:
                yield _Bad("malformed", "RDKit cannot parse this MDL record", k)
                continue
            symbols = [a.GetSymbol() for a in mol.GetAtoms()]
            pos = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
            name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
            yield pos, symbols, name, k, [a.GetFormalCharge() for a in mol.GetAtoms()]


def _symbol(token: str) -> str:
    if token.isdigit():
        return _PT.GetElementSymbol(int(token)) if 0 < int(token) < 119 else token
    return token[:1].upper() + token[1:].lower()


def _xyz_records(file: Path, text: str):
    lines = text.splitlines()
    i, k = 0, 0
    while True:
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines):
            break
        k += 1
        head = lines[i].split()
        if len(head) != 1 or not head[0].isdigit():
            reason = "not_molecule_file" if k == 1 else "malformed"
            yield _Bad(reason, f"line {i + 1}: expected an atom count, found "
                               f"{lines[i].strip()[:40]!r}", k)
            return      # cannot find the next frame without a count
        n = int(head[0])
        if n == 0:
            yield _Bad("malformed", f"line {i + 1}: zero atoms", k)
            i += 2
            continue
        frame = lines[i + 2:i + 2 + n]
        name = lines[i + 1].strip() if i + 1 < len(lines) else ""
        i += 2 + n
        if len(frame) < n:
            yield _Bad("malformed", f"truncated frame: {len(frame)} of {n} atom lines", k)
            return
        try:
            symbols, pos = [], np.empty((n, 3))
            for row, line in enumerate(frame):
                parts = line.split()
                symbols.append(_symbol(parts[0]))
                pos[row] = [float(v.replace("*^", "e")) for v in parts[1:4]]
        except (ValueError, IndexError):
            yield _Bad("malformed", f"line {i - n + row + 1}: expected 'element x y z', "
                                    f"found {line.strip()[:40]!r}", k)
            continue
        yield pos, symbols, name, k, None


def describe_files(path: Path | str) -> dict:
    """A summary of a user's molecule file or folder (``diffplat data info molecules``).

    Args:
        path: an .sdf / .xyz file or a folder of them.

    Returns:
        dict: ``path``, ``molecules`` (records read), ``bad_records`` ({reason: count}) with
        the first ``bad_example``, ``atoms_per_molecule`` (min / median / max),
        ``elements`` ({symbol: atoms}, by atomic number), ``formal_charges`` ({charge:
        atoms}) and ``charged_molecules``, ``coordinates_3d`` (molecules whose z
        coordinates are not all zero) and ``flat`` (the others: 2D drawings, no 3D
        geometry), and the stability protocol ``auto`` would choose for this data.
    """
    from domains.molecules.druglike import choose_protocol

    mols = read_molecules(path, skip_bad=True)
    sizes = np.array([len(s) for _, s, _ in mols], dtype=np.int64)
    elements: dict[str, int] = {}
    for _, symbols, _ in mols:
        for s in symbols:
            elements[s] = elements.get(s, 0) + 1
    charges: dict[int, int] = {}
    for row in mols.charges:
        for c in row:
            if c:
                charges[c] = charges.get(c, 0) + 1
    flat = sum(bool(np.all(pos[:, 2] == 0)) for pos, _, _ in mols)
    out = {"path": str(path), "molecules": len(mols),
           "bad_records": dict(sorted(mols.skipped.items()))}
    if mols.errors:
        out["bad_example"] = mols.errors[0]
    if len(mols):
        out.update(
            atoms_per_molecule={"min": int(sizes.min()), "median": float(np.median(sizes)),
                                "max": int(sizes.max())},
            elements={s: elements[s] for s in sorted(elements, key=SYMBOL_TO_Z.get)},
            formal_charges={f"{c:+d}": n for c, n in sorted(charges.items())},
            charged_molecules=sum(any(row) for row in mols.charges),
            coordinates_3d=len(mols) - flat, flat=flat,
            stability_protocol=choose_protocol("auto", elements, int(sizes.max())))
    return out


def _molecule_parts(molecule: Sequence) -> tuple[np.ndarray, list[str], list, str]:
    pos = np.asarray(molecule[0], dtype=np.float64).reshape(-1, 3)
    symbols = [str(s) for s in molecule[1]]
    bonds = list(molecule[2]) if len(molecule) > 2 and molecule[2] is not None else []
    name = str(molecule[3]) if len(molecule) > 3 else ""
    if len(symbols) != len(pos):
        raise ValueError(f"{len(symbols)} symbols for {len(pos)} positions")
    return pos, symbols, bonds, name


def write_sdf(path: Path | str, molecules: Sequence[Sequence]) -> Path:
    """Write molecules to one multi-record SDF file (3D coordinates, 4 decimals).

    Args:
        path: output file.
        molecules: (positions [n, 3], symbols, bonds[, name]) with bonds None or a list of
            (i, j, order), order 1, 2, 3 or 4 / 1.5 (aromatic). Molecules RDKit could not
            sanitise are written as they are.

    Returns:
        ``path``.
    """
    path = Path(path)
    blocks = []
    for m, molecule in enumerate(molecules):
        pos, symbols, bonds, name = _molecule_parts(molecule)
        mol = Chem.RWMol()
        for s in symbols:
            mol.AddAtom(Chem.Atom(s))
        for i, j, order in bonds:
            if order not in _BOND:
                raise ValueError(f"molecule {m}: bond order {order!r} not in 1, 2, 3, 4, 1.5")
            mol.AddBond(int(i), int(j), _BOND[order])
        conf = Chem.Conformer(len(symbols))
        conf.Set3D(True)
        for a, xyz in enumerate(pos.tolist()):
            conf.SetAtomPosition(a, xyz)
        mol.AddConformer(conf, assignId=True)
        mol.UpdatePropertyCache(strict=False)
        mol.SetProp("_Name", name)
        blocks.append(Chem.MolToMolBlock(mol, kekulize=False) + "$$$$\n")
    path.write_text("".join(blocks))
    return path


def write_xyz(path: Path | str, molecules: Sequence[Sequence]) -> Path:
    """Write molecules to one multi-frame XYZ file (Angstrom, 6 decimals).

    Args:
        path: output file.
        molecules: (positions [n, 3], symbols[, bonds[, name]]); bonds are not stored in
            XYZ, the name becomes the comment line.

    Returns:
        ``path``.
    """
    path = Path(path)
    lines = []
    for molecule in molecules:
        pos, symbols, _, name = _molecule_parts(molecule)
        lines += [str(len(symbols)), name.replace("\n", " ")]
        lines += [f"{s:<2} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(symbols, pos.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return path
