"""Offline quality evaluation: run request cases through a running service
under several strategies and score the slates (``slatewise eval``).

cases   the JSONL case format and its loader
metrics nDCG@K, hit rate, intra-list diversity, coverage, redundancy
runner  strategies, requests, local re-rankings, aggregation, table and plot
cli     ``main(argv)``: the ``slatewise eval`` command
"""
