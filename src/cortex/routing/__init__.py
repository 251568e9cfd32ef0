"""The task router: a NeuralTree that learns from routing logs which master (worker) should take a
task, how likely it is to succeed, and how long and how many tokens it will take; behind a decision
policy with rule and kNN fallbacks, a champion/challenger learning loop kept in the registry, and a
FastAPI service.

Main entry points::

    from cortex.routing import train_and_register, evaluate_registered   # what `cortex route train/eval` do
    from cortex.routing import Router, train_router, evaluate_router
    report = ingest_labeled("train.jsonl", text_field="prompt", label_field="master")
    result = train_router(report.frame, masters)
    router = Router(result.model, PolicyConfig(knn_weight=result.knn_weight), rules, result.knn, success=result.success)
    router.route("Fix the flaky CI test").master

Modules: :mod:`.data` (ingestion, validation, parquet), :mod:`.masters`, :mod:`.rules`,
:mod:`.context` (numeric context root), :mod:`.model` (RouterConfig/RouterModel on the NeuralTree),
:mod:`.lexical` (hashed n-gram root), :mod:`.embedding_cache`, :mod:`.features`, :mod:`.encoder` (the fast serving path of the text root), :mod:`.training`, :mod:`.calibration`, :mod:`.metrics`,
:mod:`.knn`, :mod:`.success` (the success head), :mod:`.policy`, :mod:`.router`, :mod:`.evaluation`, :mod:`.loop`, :mod:`.workflow`, :mod:`.service`,
:mod:`.prometheus`.
"""

from cortex.routing.calibration import fit_temperature
from cortex.routing.data import IngestReport, ingest_labeled, ingest_logs, read_training_set, write_parquet
from cortex.routing.encoder import TextEncoder
from cortex.routing.evaluation import EvalReport, evaluate_router
from cortex.routing.knn import KNNMemory
from cortex.routing.loop import PromotionRule, ShadowRouter, promote, register_router, retrain, rollback
from cortex.routing.masters import Master, load_masters
from cortex.routing.model import RouterConfig, RouterModel, RouterOutput, RouterPredictions
from cortex.routing.policy import Decision, PolicyConfig
from cortex.routing.router import Router
from cortex.routing.rules import RuleSet
from cortex.routing.training import TrainConfig, TrainResult, train_router
from cortex.routing.workflow import DataFields, RegisterSettings, evaluate_registered, train_and_register

__all__ = [
    "DataFields", "Decision", "EvalReport", "IngestReport", "KNNMemory", "Master", "PolicyConfig", "PromotionRule", "RegisterSettings", "Router",
    "RouterConfig", "RouterModel", "RouterOutput", "RouterPredictions", "RuleSet", "ShadowRouter", "TextEncoder", "TrainConfig",
    "TrainResult", "evaluate_registered", "evaluate_router", "fit_temperature", "ingest_labeled", "ingest_logs", "load_masters", "promote",
    "read_training_set", "register_router", "retrain", "rollback", "train_and_register", "train_router", "write_parquet",
]
