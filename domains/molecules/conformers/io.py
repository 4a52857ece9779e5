"""Inputs and outputs of ``diffplat conformers``: molecules from SMILES or SDF, conformers to
one multi-record SDF.

Every input becomes an ``InputMolecule``: the RDKit molecule with explicit hydrogens (SMILES
without hydrogens get them added after the heavy atoms; SDF records keep their atom order
and hydrogens, and get missing hydrogens appended), or the reason it was rejected. Nothing
is raised for a bad molecule: the caller reports it and carries on with the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase

from domains.molecules.conformers.graph import GraphError, MolGraph, conformer, mol_to_graph


@dataclass
class InputMolecule:
    """One input: ``mol`` (explicit hydrogens, stereo assigned) or ``error`` (why not)."""

    name: str
    mol: Chem.Mol | None = None
    error: str | None = None


def from_smiles(smiles: str, name: str | None = None) -> InputMolecule:
    """Parse a SMILES (explicit [H] atoms kept in place), add the missing hydrogens."""
    params = Chem.SmilesParserParams()
    params.removeHs = False
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles, params)
    if mol is None:
        return InputMolecule(name or smiles, error=f"unparsable SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    return InputMolecule(name or smiles, mol)


def from_sdf(path: Path | str) -> list[InputMolecule]:
    """Every record of an SDF file (unreadable records come back with their error).

    Stereo comes from the record (3D coordinates or parity flags, as RDKit reads them); a
    record without hydrogens gets them appended after its atoms."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--sdf: no such file {path}")
    out = []
    with rdBase.BlockLogs():
        supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=True)
        for k, mol in enumerate(supplier, start=1):
            where = f"{path.name} record {k}"
            if mol is None:
                out.append(InputMolecule(where, error="RDKit cannot parse or sanitise this "
                                                      "record"))
                continue
            title = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
            name = f"{where} ({title})" if title else where
            if any(a.GetTotalNumHs() for a in mol.GetAtoms()):
                mol = Chem.AddHs(mol, addCoords=mol.GetNumConformers() > 0)
            out.append(InputMolecule(name, mol))
    if not out:
        raise ValueError(f"--sdf {path}: no MDL records in this file")
    return out


def read_inputs(smiles: Sequence[str] = (), sdf: str | None = None) -> list[InputMolecule]:
    """All inputs of one command: the SMILES in order, then the SDF records."""
    items = [from_smiles(s) for s in smiles]
    if sdf:
        items += from_sdf(sdf)
    if not items:
        raise ValueError("no input molecules: give --smiles and/or --sdf")
    return items


def input_graphs(inputs: Sequence[InputMolecule], vocabulary: dict[str, int]
                 ) -> tuple[dict[int, MolGraph], list[tuple[int, str, str]]]:
    """The model's graphs of the inputs that parsed and fit its vocabulary.

    Returns:
        ({input index: MolGraph named as the input}, [(input index, name, reason)] of the
        inputs that failed, parsing or ``mol_to_graph``), both in input order.
    """
    graphs: dict[int, MolGraph] = {}
    failures: list[tuple[int, str, str]] = []
    for k, item in enumerate(inputs):
        if item.error:
            failures.append((k, item.name, item.error))
            continue
        try:
            graphs[k] = mol_to_graph(item.mol, vocabulary, item.name)
        except GraphError as err:
            failures.append((k, item.name, str(err)))
    return graphs, failures


def smiles_graphs(smiles: Sequence[str], vocabulary: dict[str, int]) -> list[MolGraph]:
    """MolGraphs of SMILES as ``diffplat conformers --smiles`` builds them (hydrogens added
    after the heavy atoms); raises one ValueError naming every SMILES that fails and why."""
    if isinstance(smiles, str):
        smiles = [smiles]
    if not smiles:
        raise ValueError("smiles: give at least one SMILES")
    graphs, failures = input_graphs([from_smiles(s) for s in smiles], vocabulary)
    if failures:
        raise ValueError("; ".join(reason if repr(name) in reason else
                                   f"SMILES {name!r}: {reason}" for _, name, reason in failures))
    return [graphs[k] for k in range(len(smiles))]


def write_conformers(path: Path | str,
                     molecules: Sequence[tuple[Chem.Mol, str, Sequence[np.ndarray]]]) -> Path:
    """One multi-record SDF: for every molecule, one record per conformer, in the molecule's
    atom order with its hydrogens and bonds. Each record has the molecule's name as title
    and the properties ``molecule`` (its index) and ``conformer`` (index within it).

    Args:
        molecules: (molecule, name, conformers [n, 3] each).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = Chem.SDWriter(str(path))
    try:
        for m_idx, (mol, name, confs) in enumerate(molecules):
            base = Chem.Mol(mol)
            base.RemoveAllConformers()
            for c_idx, pos in enumerate(confs):
                m = Chem.Mol(base)
                m.AddConformer(conformer(pos), assignId=True)
                m.SetProp("_Name", name)
                m.SetIntProp("molecule", m_idx)
                m.SetIntProp("conformer", c_idx)
                writer.write(m)
    finally:
        writer.close()
    return path
