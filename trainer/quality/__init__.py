"""Ground truth for runs: how close G's samples are to the data (docs/metrics.md, "Quality").

* `toyfit.toy_fit`: `toy/fit` on every toy set;
* `evaluate.QualityEval`: `quality/*` on image sets every `eval_every` steps (features, KID/FID,
  precision/recall/coverage and, on `shapes`, the reference classifier's recognisable share and modes).
"""
