"""NDCG@10 with ranx on the lists `sonde bench relevance` wrote, for its side-by-side figure.

Usage: python ranx_bench.py LISTS.bin LIST_LEN
LISTS.bin holds one unsigned byte per item: the grade, lists in rank order, LIST_LEN items
each. Prints one JSON line: lists, mean NDCG@10, and the seconds of ranx's first evaluate
(with numba compilation) and of a second, warm one. Building ranx's Qrels/Run objects is
not timed.
"""

import json
import sys
import time

import numpy as np
import pandas as pd
from ranx import Qrels, Run, evaluate

grades = np.fromfile(sys.argv[1], dtype=np.uint8)
n = int(sys.argv[2])
lists = len(grades) // n
q = np.repeat(np.arange(lists), n).astype(str)
d = np.tile(np.arange(n), lists).astype(str)
run = Run.from_df(pd.DataFrame({"q_id": q, "doc_id": d, "score": np.tile(np.arange(n, 0, -1), lists).astype(float)}))
rel = grades > 0
qrels = Qrels.from_df(pd.DataFrame({"q_id": q[rel], "doc_id": d[rel], "score": grades[rel].astype(int)}))
t0 = time.perf_counter()
first = evaluate(qrels, run, "ndcg@10", make_comparable=True)
t1 = time.perf_counter()
warm = evaluate(qrels, run, "ndcg@10", make_comparable=True)
t2 = time.perf_counter()
# ranx averages over queries with judgments; lists without a relevant item count as 0 in
# Sonde and trec_eval, so rescale to all lists.
judged = len(set(q[rel]))
print(json.dumps({"lists": lists, "judged_lists": judged, "ndcg10_mean_all": warm * judged / lists,
                  "first_secs": t1 - t0, "warm_secs": t2 - t1}))
