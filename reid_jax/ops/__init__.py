"""Custom operations: Kronecker-Product Matching (KPM, Shen et al., CVPR 2018, Sec. 3.1)."""
from reid_jax.ops.kpm import IMPLEMENTATIONS, match_pool, match_pool_pairs, matching, warp

__all__ = ["IMPLEMENTATIONS", "match_pool", "match_pool_pairs", "matching", "warp"]
