"""Ablation studies: study files run on the engine, and what is read from their records.

files.py (study files; published.py: the paper's rows they point at) -> items.py (variant x seed work items)
-> ablate.py (the items as a source of work for workbench.engine) -> results.py (the paper-shaped table, from
the store; paired.py: deltas paired by seed and test image, power), fidelity.py (rank fidelity over models),
ladder.py (one study under several cheap settings), latency_ratios.py (Table 5's ratios).
`shipped/` holds copies of the repository's studies/ for installs without the source tree.
"""
