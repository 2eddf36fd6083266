"""Retrieval metrics: distances, CMC / mAP / mINP, CUHK03 single-shot, multi-query, re-ranking,
pair scores (KPM's cascade and full evaluation), the verification ROC and the rank-1 per
camera pair; and the top-k classification error of task='classification'.

The protocol is described in README.md, "Evaluation".
"""
from reid_jax.metrics.camera_pairs import camera_pair_rank1
from reid_jax.metrics.classification import top_k_error
from reid_jax.metrics.distance import METRICS, pairwise_distance
from reid_jax.metrics.evaluation import PROTOCOLS, evaluate_features, evaluate_rank
from reid_jax.metrics.multi_query import pool_queries
from reid_jax.metrics.pairwise import evaluate_scores
from reid_jax.metrics.rerank import KReciprocal, re_ranking, re_ranking_features
from reid_jax.metrics.roc import FPR_TARGETS, roc_curve, tpr_at_fpr

__all__ = ["FPR_TARGETS", "METRICS", "PROTOCOLS", "KReciprocal", "camera_pair_rank1",
           "evaluate_features", "evaluate_rank", "evaluate_scores", "pairwise_distance",
           "pool_queries", "re_ranking", "re_ranking_features", "roc_curve", "top_k_error", "tpr_at_fpr"]
