"""kg-etl's benchmarks: each figure against a baseline measured in the same run (``kg-etl bench`` runs them all).

They need the ``bench`` extra (the GGUF writer of ``kg_etl.testing``, matplotlib for the chart). The corpus
files some of them read are found at ``$KG_ETL_CORPUS``, else at ``../shared/corpus`` beside a checkout;
where it is absent, those figures say so instead of being measured.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CORPUS", "CORPUS_ENV"]

CORPUS_ENV = "KG_ETL_CORPUS"
CORPUS = Path(os.environ.get(CORPUS_ENV) or Path(__file__).resolve().parents[3] / "shared" / "corpus")
