//! rlvr verifier: reward functions (in progress).
