//! GPU tests of the MoE routing family (placeholder while writing).
