"""Stage ``dedup``: silver.files → silver.unique_files (+ silver.dup_clusters, silver.rejects).

One straight line, a module per step:

1. ``sign``: every file's content hash and MinHash signature, one pass over the text;
2. ``exact``: one content hash, one exact cluster; the rest are ``exact_duplicate``;
3. ``candidates`` (band + candidates): LSH buckets of the exact survivors' signatures propose
   candidate pairs;
4. ``verify``: a pair is an edge if its Jaccard similarity is ≥ ``dedup.threshold``;
5. ``components``: connected components of the edges, labelled by their smallest file id;
6. ``representatives``: each component keeps its first file by ``rank``; the rest are
   ``near_duplicate``;
7. ``write``: the decisions joined back to the rows; silver.unique_files, every dropped file in
   silver.rejects with its cluster in ``detail`` (without its text, which stays in silver.files
   at the version the ledger pins; ``dedup.rejects_text`` copies it), every cluster of two or
   more files in silver.dup_clusters.

``stage`` wires them. The settings that change the output live in ``dedup``; the ones that only
choose how (one task or distributed, who reads and writes the Parquet) in ``dedup.tuning``, which
``config_hash`` ignores. Definitions of hashes, shingles and signatures: ``udfs.minhash``.
"""

from jobs.dedup.stage import STAGE, build

__all__ = ["STAGE", "build"]
