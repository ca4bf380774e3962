"""Benchmark decontamination: find rows that overlap evaluation benchmarks.

- ``decontam.text`` — the normalisation (case, punctuation, whitespace, Unicode NFKC) and the
  64-bit hashes of word n-grams every index and pack shares
- ``decontam.benchmarks`` — a benchmark from a JSONL/Parquet file or a dataset folder, with a
  column mapping, as ``(id, text)`` items
- ``decontam.pack`` — hashed n-gram packs (``datamill decontam pack``): hashes and item ids only,
  no benchmark text, to share and use offline
- ``decontam.index`` — the lookup: n-gram hashes of all benchmarks in one sorted array, plus the
  optional fuzzy (``rapidfuzz``) and embedding matchers over raw benchmark texts
- ``decontam.step`` — the ``decontaminate`` step

Deliberately not here: downloading benchmarks (give a local file or a pack), deciding what a
benchmark is (any texts you name are one).
"""
