"""The blinded rater study (paper Sec 3.3, App K, App L.1): packets, AI raters,
the ratings table, its statistics, and simulated raters with a planted truth."""

from klsc_lib.analysis.raters.ai_client import Answer, ChatRater, parse_answer
from klsc_lib.analysis.raters.analysis import (Estimate, PairedTest, best_method_per_rater, bootstrap_mean,
                                               description_variance, feature_means, krippendorff_alpha, mean_scores,
                                               paired_wilcoxon, success_rate, weighted_variance)
from klsc_lib.analysis.raters.encoders import text_encoder
from klsc_lib.analysis.raters.packets import Packet, SampleSet, read_key, unblind, write_packet
from klsc_lib.analysis.raters.prompts import RUBRIC, SYSTEM_PROMPT, USER_PROMPT
from klsc_lib.analysis.raters.ratings import Rating, RatingsError, load_ratings, write_ratings
from klsc_lib.analysis.raters.simulate import SimulatedRater, expected_score, simulate_ratings

__all__ = ["Answer", "ChatRater", "parse_answer", "Estimate", "PairedTest", "best_method_per_rater", "bootstrap_mean",
           "description_variance", "feature_means", "krippendorff_alpha", "mean_scores", "paired_wilcoxon",
           "success_rate", "weighted_variance", "text_encoder", "Packet", "SampleSet", "read_key", "unblind", "write_packet",
           "RUBRIC", "SYSTEM_PROMPT", "USER_PROMPT", "Rating", "RatingsError", "load_ratings", "write_ratings",
           "SimulatedRater", "expected_score", "simulate_ratings"]
