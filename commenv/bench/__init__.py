"""The benchmarks, one module each: ``commenv bench <name>`` or ``python -m commenv.bench.<name>``.

Each module has ``main(argv) -> rows``; :mod:`commenv.bench.tools` holds their shared plumbing
(result files, tables, progress bars, loading a user's agent).
"""

from __future__ import annotations

BENCHMARKS: dict[str, str] = {
    "graph": "table 2.2: nodes sharing labels, logits or features (node_graph_v0)",
    "quiz": "table 3.1: the hardness-selecting teacher (quiz_v0)",
    "language": "table 4.1: speakers at four communication levels (partial_obs_v0)",
    "unsupervised": "table 2.3: VAE and BiGAN nodes sharing features (linear probes)",
    "frontier": "the bandwidth frontier: output sharing vs gradient exchange (node_graph_v0)",
    "speed": "throughput of every face beside MPE2, and of the batched agents",
}
