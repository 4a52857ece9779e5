"""Graph featurisation: QM9 atom order, pair features, stereo conventions, SDF grouping."""

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from domains.molecules.conformers.data import collate, encode, sdf_graphs
from domains.molecules.conformers.graph import (
    PAIR_DIM,
    GraphError,
    mol_from_xyz,
    mol_to_graph,
    node_dim,
)
from domains.molecules.conformers.io import from_smiles
from domains.molecules.egnn import fully_connected_edges

VOCAB = {s: i for i, s in enumerate(["H", "C", "N", "O", "F"])}


def test_qm9_graphs_keep_the_cache_atom_order(qm9_small):
    from domains.molecules.conformers.data import qm9_graphs
    from domains.molecules.qm9 import load_qm9

    cache = load_qm9(qm9_small)
    idx = np.arange(300)
    skipped = {}
    graphs = qm9_graphs(cache, idx, VOCAB, skipped)
    assert len(graphs) + sum(skipped.values()) == 300 and set(skipped) <= {"bonds"}
    assert len(graphs) > 280
    for g in graphs:
        i = int(g.name.split(":")[1])
        pos, z = cache.molecule(i)
        assert [a.GetAtomicNum() for a in g.mol.GetAtoms()] == z.tolist()
        assert np.allclose(g.mol.GetConformer().GetPositions(), pos, atol=1e-5)
        assert np.array_equal(g.conformers[0], pos.astype(np.float64))
        # the bond graph is chemically complete: every atom's valence is satisfied
        assert all(a.GetNumImplicitHs() == 0 for a in g.mol.GetAtoms())


def test_pair_features_of_ethanol_by_hand():
    mol = from_smiles("CCO").mol            # atoms C0 C1 O2 then the hydrogens
    g = mol_to_graph(mol, VOCAB)
    ei, ea = g.pair_features()
    n = mol.GetNumAtoms()
    assert ea.shape == (n * (n - 1), PAIR_DIM)
    # the same order as the EGNN's fully connected edges of one molecule
    fc = fully_connected_edges(torch.zeros(n, dtype=torch.long))
    assert torch.equal(torch.from_numpy(ei), fc)
    feats = {(int(i), int(j)): f for (i, j), f in zip(ei.T, ea)}
    assert feats[(0, 1)][:5].tolist() == [0, 1, 0, 0, 0] and feats[(0, 1)][5] == 1  # bond, 1 hop
    assert feats[(0, 2)][:5].tolist() == [1, 0, 0, 0, 0] and feats[(0, 2)][6] == 1  # 1-3 pair
    h_on_c0 = [a.GetIdx() for a in mol.GetAtomWithIdx(0).GetNeighbors() if a.GetSymbol() == "H"]
    h_on_o = [a.GetIdx() for a in mol.GetAtomWithIdx(2).GetNeighbors()][-1]
    assert feats[(h_on_c0[0], h_on_o)][5 + 3] == 1  # H-C-C-O-H: four bonds apart
    x = g.node_features(len(VOCAB))
    assert x.shape == (n, node_dim(5)) and x[2, VOCAB["O"]] == 1 and x[:, :5].sum() == n


@pytest.mark.parametrize("smiles,relation", [("C/C=C\\C", 1), ("C/C=C/C", 2)])
def test_cis_trans_flags(smiles, relation):
    g = mol_to_graph(from_smiles(smiles).mol, VOCAB)
    assert g.ez[0, 3] == g.ez[3, 0] == relation
    # the hydrogens on the double bond carbons are on the other side of each methyl
    h1 = [a.GetIdx() for a in g.mol.GetAtomWithIdx(1).GetNeighbors() if a.GetSymbol() == "H"]
    assert g.ez[h1[0], 3] == 3 - relation


def test_chiral_sign_convention_matches_rdkit_geometry():
    """sign * det[x_n1 - x_c, x_n2 - x_c, x_n3 - x_c] > 0 on RDKit's own embeddings, for
    centres with four neighbours and with three (sulfoxide lone pair)."""
    for smiles in ("C[C@H](O)CC", "C[C@@H](O)CC", "N[C@@H](C)C(=O)O", "C[S@](=O)CC",
                   "O[C@H]1CC[C@@H](C)CC1"):
        mol = from_smiles(smiles).mol
        g = mol_to_graph(mol, {**VOCAB, "S": 5})
        assert len(g.chiral) >= 1
        for cid in AllChem.EmbedMultipleConfs(mol, 3, randomSeed=11):
            pos = mol.GetConformer(cid).GetPositions()
            for c, a, b, d, sign in g.chiral:
                vol = np.linalg.det(np.stack([pos[a] - pos[c], pos[b] - pos[c], pos[d] - pos[c]]))
                assert sign * vol > 0, smiles


def test_bad_molecules_name_their_reason():
    with pytest.raises(GraphError, match="Cl outside the model's vocabulary"):
        mol_to_graph(from_smiles("CCCl").mol, VOCAB)
    with pytest.raises(GraphError, match="too_small"):
        mol_to_graph(Chem.MolFromSmiles("[Na+]"), {"Na": 0})
    with pytest.raises(GraphError, match="bonds"):   # CH5: no neutral Lewis structure
        mol_from_xyz(np.array([[0.0, 0, 0], [1.09, 0, 0], [-0.5, 0.9, 0], [-0.5, -0.9, 0],
                               [0, 0, 1.09], [0, 0, -1.09]]), np.array([6, 1, 1, 1, 1, 1]))


def test_sdf_records_are_grouped_and_reordered(tmp_path):
    mol = from_smiles("N[C@@H](C)C(=O)O").mol
    AllChem.EmbedMultipleConfs(mol, 3, randomSeed=5)
    other = from_smiles("CC#N").mol
    AllChem.EmbedMultipleConfs(other, 2, randomSeed=5)
    perm = list(range(mol.GetNumAtoms()))[::-1]            # one record in reversed atom order
    writer = Chem.SDWriter(str(tmp_path / "set.sdf"))
    for cid in range(3):
        m = Chem.Mol(mol, confId=cid)
        writer.write(Chem.RenumberAtoms(m, perm) if cid == 2 else m)
    for cid in range(2):
        writer.write(Chem.Mol(other, confId=cid))
    writer.close()
    skipped = {}
    graphs = sdf_graphs(tmp_path / "set.sdf", VOCAB, False, skipped)
    assert sorted(len(g.conformers) for g in graphs) == [2, 3] and not skipped
    ala = next(g for g in graphs if len(g.conformers) == 3)
    for cid in range(3):  # reordered record mapped back: same coordinates atom by atom
        assert np.allclose(ala.conformers[cid], mol.GetConformer(cid).GetPositions(), atol=1e-3)


def test_collate_offsets_edges_and_stereocentres():
    gs = [mol_to_graph(from_smiles(s).mol, VOCAB) for s in ("C[C@H](O)CC", "CO", "C[C@@H](N)F")]
    items = [encode(g, np.random.default_rng(0).normal(size=(len(g), 3)), 5) for g in gs]
    b = collate(items)
    assert torch.equal(b["edge_index"], fully_connected_edges(b["batch"], 3))
    sizes = [len(g) for g in gs]
    assert b["chiral_index"].tolist() == [[*(gs[0].chiral[0, :4])],
                                          [*(gs[2].chiral[0, :4] + sizes[0] + sizes[1])]]
    assert b["chiral_sign"].tolist() == [gs[0].chiral[0, 4], gs[2].chiral[0, 4]]
    centred = b["x"][b["batch"] == 1]
    assert torch.allclose(centred.mean(0), torch.zeros(3), atol=1e-6)


def test_domain_on_a_multi_conformer_sdf_with_etkdg_targets(tmp_path):
    from domains.molecules.conformers.domain import ConformerDomain

    writer = Chem.SDWriter(str(tmp_path / "set.sdf"))
    counts = {}
    for k, smiles in enumerate(["CCO", "N[C@@H](C)C=O", "ClCC#N", "OCC=O"]):
        mol = from_smiles(smiles).mol
        counts[Chem.MolToSmiles(mol)] = len(AllChem.EmbedMultipleConfs(mol, k + 1, randomSeed=2))
        for cid in range(k + 1):
            writer.write(Chem.Mol(mol, confId=cid))
    writer.close()
    domain = ConformerDomain(data_path=str(tmp_path / "set.sdf"), etkdg_targets=2)
    domain.setup()
    assert list(domain.vocabulary) == ["H", "C", "N", "O", "Cl"]   # from the data, by Z
    train = domain.graphs("train")
    assert len(train) + len(domain.graphs("test")) + len(domain.graphs("val")) == 4
    for g in train:  # the file's conformers, then two ETKDG+MMFF targets
        assert len(g.conformers) == counts[g.name] + 2
    ds = domain.train_dataset()
    assert len(ds) == sum(len(g.conformers) for g in train)
    x, cond, space = domain.unpack(domain.collate([ds[i] for i in range(len(ds))]))
    assert x.shape[1] == 3 and cond["node_attr"].shape[1] == node_dim(5)
    # zero-CoM noise on positions only: (n - 1) x 3 degrees of freedom per item
    assert space.dof(x).tolist() == [3 * (len(train[g]) - 1) for g, _ in ds.items]


@pytest.mark.parametrize("smiles", ["CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O", "OC(=O)c1ccccc1",
                                    "CC(=O)OCC(N)=O", "N#CC1=CC=CN1", "C[C@H](O)C=O"])
def test_a_smiles_input_has_the_features_of_a_training_molecule(smiles):
    """The graph ``diffplat conformers --smiles`` builds (hydrogens added by AddHs) has the
    node and pair features of the same molecule built as QM9 training molecules are (bonds
    from a 3D geometry by DetermineBonds, sanitised), atom for atom. Hydrogens once had the
    hybridisation 'other' here and 'S' in training: every SMILES input was out of
    distribution, and refined conformers got worse than their ETKDG starts. (Stereo is given
    here: a stereocentre a SMILES leaves open has no tag, where training molecules always
    have one from their geometry; docs/conformers.md.)"""
    inp = from_smiles(smiles).mol
    a = mol_to_graph(inp, VOCAB)
    geo = Chem.Mol(inp)
    AllChem.EmbedMolecule(geo, randomSeed=3)
    b = mol_to_graph(mol_from_xyz(geo.GetConformer().GetPositions(),
                                  [x.GetAtomicNum() for x in geo.GetAtoms()]), VOCAB)
    order = np.array(inp.GetSubstructMatch(b.mol))  # atom k of b is atom order[k] of a
    assert len(order) == len(a)
    np.testing.assert_array_equal(a.node_features(5)[order], b.node_features(5))
    np.testing.assert_array_equal(a.hybrid[order], b.hybrid)
    assert (b.hybrid[b.elements == 0] == 0).all()  # hydrogens: s
    for name in ("bond", "hops", "ez"):
        np.testing.assert_array_equal(getattr(a, name)[np.ix_(order, order)], getattr(b, name))
