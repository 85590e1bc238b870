"""Retrieval: k-NN search (faiss), Recall@K / mAP, acceptance thresholds (FAR / FRR), searchers and the one evaluator, re-ranking, head accuracy and result pictures."""
from prodrec.retrieval.faiss_index import (INDEX_TYPES, METRICS, check_index_type, new_faiss_index, search_knob,
                                           faiss_message)
from prodrec.retrieval.knn import (knn_search, l2_normalize, import_faiss, use_faiss_gpu, as_matrix, check_matrix,
                                   float32_rows)
from prodrec.retrieval.ranks import NO_MATCH, LabelGroups, MatchStatistics, match_statistics, list_statistics
from prodrec.retrieval.metrics import retrieval_metrics, similarity_metrics, rank_by_similarity, metric_summary
from prodrec.retrieval.search import Searcher, ExactSearch, ListSearch, FaissSearch, RerankedSearch
from prodrec.retrieval.threshold import (TopOneOutcomes, ThresholdChoice, far_upper_bound, min_supported_far,
                                        error_rates, check_far, choose_threshold, open_set_rates)
from prodrec.retrieval.threshold_plot import plot_error_rates
from prodrec.retrieval.evaluate import extract_embeddings, evaluate, evaluate_embeddings
from prodrec.retrieval.rerank import (RERANK_METHODS, rerank, rerank_gallery)
from prodrec.retrieval.classification import (topk_accuracy, classification_accuracy, head_logits)
from prodrec.retrieval.visualize import (RIGHT_COLOR, WRONG_COLOR, QUERY_COLOR, GridLayout, first_hit_ranks,
                                         order_queries, draw_results, inshop_category, recall_at_1_by_category,
                                         category_table)

__all__ = ["INDEX_TYPES", "METRICS", "check_index_type", "new_faiss_index", "search_knob", "faiss_message",
           "knn_search", "l2_normalize", "import_faiss", "use_faiss_gpu", "as_matrix", "check_matrix", "float32_rows",
           "retrieval_metrics", "similarity_metrics", "rank_by_similarity", "metric_summary", "LabelGroups",
           "NO_MATCH", "MatchStatistics", "match_statistics", "list_statistics", "Searcher", "ExactSearch",
           "ListSearch", "FaissSearch", "RerankedSearch", "TopOneOutcomes", "ThresholdChoice",
           "far_upper_bound", "min_supported_far", "error_rates", "check_far", "choose_threshold", "open_set_rates", "plot_error_rates", "extract_embeddings", "evaluate", "evaluate_embeddings", "RERANK_METHODS",
           "rerank", "rerank_gallery", "topk_accuracy", "classification_accuracy", "head_logits", "RIGHT_COLOR",
           "WRONG_COLOR", "QUERY_COLOR", "GridLayout", "first_hit_ranks", "order_queries", "draw_results",
           "inshop_category", "recall_at_1_by_category", "category_table"]
